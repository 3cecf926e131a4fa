"""The local image store: images imported from files, no registry.

``ImageStore(<agent data dir>/images)`` imports a rootfs tarball, a ``docker save`` /
``podman save`` archive or an OCI image layout (``import_file``), lists, resolves and
removes images, and hands a runtime the extracted layer directories of an image,
bottom to top, for an overlayfs ``lowerdir`` (``layer_dirs``, which verifies every
layer's sha256 first). ``config`` holds the pure rules of an image's config as Docker
applies them (``command_for``, ``env_for``, ``resolve_user``); ``reference`` parses
``NAME[:TAG]`` and image ids.
"""
