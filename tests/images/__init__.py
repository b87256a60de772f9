"""snowtrain's two images built without a Docker engine, the same as the Dockerfiles build.

``operator/Dockerfile`` and ``trainer_image/Dockerfile`` are the real builds for users with
Docker. Here there is no Docker engine and no registry, so ``python -m tests.images`` builds
the same images from Debian bookworm (debootstrap) + a venv with the same extras, writes OCI
tarballs with umoci and imports them into the local cluster's containerd (tests/cluster).
``spec`` says what each image contains; a unit test checks the Dockerfiles agree with it.
"""
