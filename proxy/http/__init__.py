"""The data plane's wire: the app's connections (server.py, exchange.py), upstream
connections and their pools, message heads and bodies, tunnels. asyncio Protocols on
uvloop, parsed by llhttp (httptools)."""
