"""The command line: `fender run | check | schema | version | demo | status | slo rules |
audit verify`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import orjson

from . import __version__
from .config.loader import ConfigError
from .config.model import Config, load_config
from .observe.logs import JsonLog

CONFIG_ENV = "FENDER_CONFIG"


def c_parser_missing() -> str | None:
    """Why Fender must not serve with this aiohttp, or None when it may."""
    from aiohttp import http_parser

    c_parser = getattr(http_parser, "HttpRequestParserC", None)
    if c_parser is None or http_parser.HttpRequestParser is not c_parser:
        return (
            "aiohttp's C HTTP parser is not in use (AIOHTTP_NO_EXTENSIONS set, or aiohttp "
            "installed without its compiled extensions). The pure-Python parser has carried "
            "request-smuggling bugs, so Fender refuses to serve with it. Unset "
            "AIOHTTP_NO_EXTENSIONS or reinstall aiohttp from a wheel."
        )
    return None


def run_async(main: Coroutine[Any, Any, int]) -> int:
    """Run on uvloop when it is installed, on asyncio's loop otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    code: int = uvloop.run(main)
    return code


def schema() -> dict[str, Any]:
    data = Config.model_json_schema()
    data["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    data["title"] = "Fender policy file"
    return data


def cmd_run(args: argparse.Namespace) -> int:
    from .lifecycle import serve

    path = args.config or os.environ.get(CONFIG_ENV)
    if not path:
        print(f"fender run: give -c FILE or set {CONFIG_ENV}", file=sys.stderr)
        return 2
    log = JsonLog()
    log.capture_std_logging()
    try:
        problem = c_parser_missing()
        if problem:
            log.event("start_failed", "error", error=problem)
            print(f"fender: {problem}", file=sys.stderr)
            return 2
        try:
            config = load_config(path)
        except ConfigError as exc:
            log.event("start_failed", "error", error="invalid config", problems=str(exc))
            print(exc, file=sys.stderr)
            return 1
        return run_async(serve(config, log))
    finally:
        log.flush()  # lines are written by a thread of their own: all out before exit


def cmd_check(args: argparse.Namespace) -> int:
    failed = False
    for path in args.files:
        try:
            config = load_config(path)
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            failed = True
        else:
            warned = config.warnings
            said = f", {len(warned)} warning" + ("s" if len(warned) != 1 else "") if warned else ""
            print(f"{path}: ok (hash {config.hash}){said}")
            for warning in warned:
                print(f"  {warning.render(config.source)}", file=sys.stderr)
    return 1 if failed else 0


def cmd_schema(args: argparse.Namespace) -> int:
    out = orjson.dumps(schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    sys.stdout.buffer.write(out + b"\n")
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    print(f"fender {__version__}")
    return 0


def cmd_audit_verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .control.audit import verify

    try:
        count, broken = verify(Path(args.file))
    except OSError as exc:
        print(f"fender audit verify: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    if broken is not None:
        previous, line = broken
        after = f"line {previous}" if previous else "the start"
        print(
            f"{args.file}:{line}: the chain is broken: line {line} does not follow {after} "
            f"(one of them was edited, or lines between them were removed or inserted); "
            f"{count} audit lines verified before it",
            file=sys.stderr,
        )
        return 1
    print(f"{args.file}: ok, {count} audit lines, chain intact")
    return 0


def cmd_slo_rules(args: argparse.Namespace) -> int:
    import yaml

    from .observe.slo import objectives
    from .observe.slo_rules import prometheus_rule, rule_groups

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    wanted = objectives(config)
    if not wanted:
        print(f"{args.file}: no route has an slo: no rules to write", file=sys.stderr)
        return 1
    groups = rule_groups(
        wanted, selector=args.selector, page=args.page_severity, ticket=args.ticket_severity
    )
    data = {"groups": groups} if args.format == "rules" else prometheus_rule(groups, args.name)
    sys.stdout.write(yaml.safe_dump(data, sort_keys=False, width=1 << 20))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from .control.terminal import run_status

    return run_status(args.control, args.token_file, watch=args.watch, interval=args.interval)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    problem = c_parser_missing()
    if problem:
        print(f"fender: {problem}", file=sys.stderr)
        return 2
    try:
        return run_async(run_demo(args.duration))
    except KeyboardInterrupt:  # Ctrl-C: the demo already drained and printed its total
        return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fender", description="A sidecar resilience proxy.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="serve with a policy file")
    run.add_argument("-c", "--config", help=f"the policy file (or ${CONFIG_ENV})")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate policy files without starting")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=cmd_check)
    sub.add_parser("schema", help="print the policy file's JSON Schema").set_defaults(
        func=cmd_schema
    )
    sub.add_parser("version", help="print the version").set_defaults(func=cmd_version)
    demo = sub.add_parser("demo", help="run Fender before a misbehaving built-in upstream")
    demo.add_argument("--duration", type=float, default=30.0, help="seconds (default 30)")
    demo.set_defaults(func=cmd_demo)
    status = sub.add_parser("status", help="a running Fender's state, as tables")
    status.add_argument("--control", default="http://127.0.0.1:9901", help="the control port's URL")
    status.add_argument("--token-file", help="a file holding the control API's token")
    status.add_argument("--watch", action="store_true", help="refresh in place until Ctrl-C")
    status.add_argument("--interval", type=float, default=2.0, help="seconds between looks")
    status.set_defaults(func=cmd_status)
    slo = sub.add_parser("slo", help="service level objectives")
    slo_sub = slo.add_subparsers(dest="slo_command", required=True)
    rules = slo_sub.add_parser("rules", help="print the Prometheus rules of a policy's SLOs")
    rules.add_argument("file")
    rules.add_argument(
        "--selector",
        default="",
        help="label matchers added to every selector, like 'namespace=\"shop\"'",
    )
    rules.add_argument("--name", default="fender-slo", help="the PrometheusRule's name")
    rules.add_argument(
        "--format",
        choices=("prometheusrule", "rules"),
        default="prometheusrule",
        help="a PrometheusRule (Prometheus Operator) or a plain rule file",
    )
    rules.add_argument("--page-severity", default="page", help="severity label of pages")
    rules.add_argument("--ticket-severity", default="ticket", help="severity label of tickets")
    rules.set_defaults(func=cmd_slo_rules)
    audit = sub.add_parser("audit", help="the control API's audit log")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True)
    check_chain = audit_sub.add_parser("verify", help="check a log's hash chain")
    check_chain.add_argument("file")
    check_chain.set_defaults(func=cmd_audit_verify)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
