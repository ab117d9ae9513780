"""`make containers`: both images built from the project's Dockerfiles and the compose setup run
on a real Docker engine, with devhub on the host standing in for the Hub.

What no machine here has is replaced, and only that:

* no image registry: the two base images are stand-ins built locally under the tags the
  Dockerfiles name (`bases`): Debian bookworm's Python 3.11 for `python:3.11-slim`, the same
  plus the CPU torch wheel for the CUDA PyTorch image;
* no GPU: `compose.override.yml` drops the trainer's GPU reservation, and the trainer runs the
  tiny model on the CPU;
* no bridge network: both containers and both builds use the host's network, so they reach
  devhub on 127.0.0.1 and pip reaches the package registry.

Everything else is the project's own: the Dockerfiles unchanged, `docker-compose.yml` driven by
Docker Compose v2 (`engine.ensure_compose`), the README's commands as written.

    python -m scripts.containers            # the whole scenario, then a summary
    make containers                         # the same as a test (tests/containers)
"""
