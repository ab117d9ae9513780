# Stand-in for python:3.11-slim (no registry here): Debian bookworm's Python 3.11 from the
# debootstrap rootfs, plus the host's CA bundle and pip configuration (files/etc/...), so pip in
# the project's builds reaches the package registry the host's pip reaches.
ARG ROOTFS
FROM ${ROOTFS}
COPY files/ /
ENV LANG=C.UTF-8 \
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["python3"]
