"""What Fender tells about itself: metrics (one private registry, every collector declared
in one place) and JSON logs (written by a thread off the loop)."""
