"""The model puller: init containers that copy version folders out of S3 (pure, no I/O).

TensorFlow Serving has had no S3 file system since 2.7 (only the GCS one is
linked; s3:// answers "File system scheme 's3' not implemented"), so a pod
serving ``storage.uri: s3://bucket/prefix`` gets the version folders its
config names copied into an ``emptyDir`` before the server starts, and the
server reads them there (mounted read-only) as from any volume. gs:// keeps
the server's own GCS reader and gets no puller.

The copy tool is rclone (its official image, pinned; overridable with
TFSO_PULLER_IMAGE and the chart's ``puller.image``): one static binary that
speaks S3 and every S3-compatible store (MinIO, Ceph, R2, ...), uses the AWS
SDK's credential chain (access keys, IRSA's web identity token), exits
non-zero with the store's own error, and is what Seldon Core's storage
initializer runs, so users have met its messages before.

Each pod gets, in order:

* one ``model-pull-<version>`` container per version:
  ``rclone copy store:<bucket>/<prefix>/<version> /models/.partial/<version>``.
  A missing version folder fails with rclone's "directory not found", bad
  credentials with the store's refusal; either way the error ends the
  container's log, which becomes its termination message.
* ``model-publish``: ``rclone moveto /models/.partial /models/<modelName>``, one
  directory rename on the same volume, so the server's base path appears with
  every version complete or not at all (a re-run, after the pod's sandbox was
  recreated, falls back to moving file by file before the server starts).

Credentials reach these containers only, as environment variables from the
user's Secret (``secretKeyRef``: the operator never reads the Secret), in
rclone's ``RCLONE_CONFIG_<REMOTE>_<OPTION>`` form; every key is optional, so a
pod whose ServiceAccount carries the credentials (IRSA: the webhook injects
AWS_ROLE_ARN and AWS_WEB_IDENTITY_TOKEN_FILE) needs no Secret, or one holding
only the region or endpoint.
"""

from __future__ import annotations

import posixpath
from typing import Any

from tfserving_operator import api
from tfserving_operator.spec import ServedModel, VersionSet

# rclone's official image at the version the local cluster builds from source
# (localdev/sim/toolchain/rclone/go.mod), so the tests run the very binary the
# image holds. Pinned by tag: pin it by digest in your registry mirror through
# TFSO_PULLER_IMAGE (the chart's puller.image).
PULLER_IMAGE = "docker.io/rclone/rclone:1.76.0"
PULLER_BINARY = "rclone"
# The rclone remote the environment defines (RCLONE_CONFIG_STORE_*).
REMOTE = "store"
VOLUME = "pulled-models"
PARTIAL_DIR = f"{api.PULLED_MODELS_DIR}/.partial"
PUBLISH_CONTAINER = "model-publish"
PULL_CONTAINER_PREFIX = "model-pull-"
TERMINATION_MESSAGE_PATH = "/dev/termination-log"
# rclone's exit code for --error-on-no-transfer with nothing copied.
NO_FILES_EXIT_CODE = 9

# Secret key -> rclone option. AWS's own names for the keys and region, the
# CRD's S3_ENDPOINT, and S3_PROVIDER (rclone's provider: AWS, Minio, Ceph,
# Other...) which decides path-style or virtual-host addressing.
SECRET_KEYS: tuple[tuple[str, str], ...] = (
    ("AWS_ACCESS_KEY_ID", "ACCESS_KEY_ID"),
    ("AWS_SECRET_ACCESS_KEY", "SECRET_ACCESS_KEY"),
    ("AWS_SESSION_TOKEN", "SESSION_TOKEN"),
    ("AWS_REGION", "REGION"),
    ("S3_ENDPOINT", "ENDPOINT"),
    ("S3_PROVIDER", "PROVIDER"),
)


def pulls(sm: ServedModel) -> bool:
    """Whether `sm`'s pods get the puller (s3:// URIs; gs:// is read by the server)."""
    return sm.storage.kind == "uri" and sm.storage.uri.startswith("s3://")


def remote_path(uri: str, version: int) -> str:
    """``s3://bucket/prefix`` and a version -> ``store:bucket/prefix/<version>``."""
    return f"{REMOTE}:{posixpath.join(uri.removeprefix('s3://'), str(version))}"


def env_name(option: str) -> str:
    """rclone's environment variable for an option of our remote."""
    return f"RCLONE_CONFIG_{REMOTE.upper()}_{option}"


def puller_env(sm: ServedModel) -> list[dict[str, Any]]:
    """The remote's definition, and the credentials from the user's Secret, if any."""
    env: list[dict[str, Any]] = [
        {"name": env_name("TYPE"), "value": "s3"},
        # With no keys below, the AWS SDK's chain finds them (IRSA web identity,
        # AWS_* variables the platform injects).
        {"name": env_name("ENV_AUTH"), "value": "true"},
        # No config file: everything comes from this environment, and nothing
        # is read from (or written to) the read-only root file system.
        {"name": "RCLONE_CONFIG", "value": "/dev/null"},
    ]
    secret = sm.storage.credentials_secret
    if secret:
        for key, option in SECRET_KEYS:
            ref = {"name": secret, "key": key, "optional": True}
            env.append({"name": env_name(option), "valueFrom": {"secretKeyRef": ref}})
    return env


def _security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container(sm: ServedModel, name: str, args: list[str], env: bool) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": sm.puller_image or PULLER_IMAGE,
        "imagePullPolicy": "IfNotPresent",
        "command": [PULLER_BINARY],
        "args": args,
        "volumeMounts": [{"name": VOLUME, "mountPath": api.PULLED_MODELS_DIR}],
        # rclone's last log lines hold the store's error: they become the
        # termination message the operator quotes when it refuses the version.
        "terminationMessagePath": TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": _security_context(),
    }
    if env:
        container["env"] = puller_env(sm)
    return container


def init_containers(sm: ServedModel, serve: VersionSet) -> list[dict[str, Any]]:
    """The puller's init containers for a pod serving `serve` (none unless s3://)."""
    if not pulls(sm):
        return []
    containers = [
        _container(
            sm,
            f"{PULL_CONTAINER_PREFIX}{version}",
            [
                "copy",
                remote_path(sm.storage.uri, version),
                f"{PARTIAL_DIR}/{version}",
                # S3 has no folders: a missing version is an empty listing,
                # not an error. Exit 9 (NO_FILES_EXIT_CODE) says so.
                "--error-on-no-transfer",
                # One line per file copied, and "There was nothing to transfer".
                "--verbose",
                # No periodic progress lines: the error stays at the log's end.
                "--stats=0",
            ],
            env=True,
        )
        for version in serve.versions
    ]
    containers.append(
        _container(sm, PUBLISH_CONTAINER, ["moveto", PARTIAL_DIR, sm.storage.base_path], env=False)
    )
    return containers


def volume() -> dict[str, Any]:
    """The emptyDir the puller fills (it lives as long as the pod)."""
    return {"name": VOLUME, "emptyDir": {}}


def server_mount() -> dict[str, Any]:
    """The pulled folders in the server container: read-only."""
    return {"name": VOLUME, "mountPath": api.PULLED_MODELS_DIR, "readOnly": True}


def is_puller(container_name: str) -> bool:
    """Whether an init container's name is one of the puller's."""
    return container_name.startswith(PULL_CONTAINER_PREFIX) or container_name == PUBLISH_CONTAINER
