"""The sandbox layer: every Docker call of litecoder's own goes through this package.

- `engine`: the client, ownership labels, cleanup, the disk-quota check
- `container`: `Sandbox`, a hardened container that runs one command at a time
- `build`: hardened image builds, `docker import`, pulls
- `untrusted`: what comes out of a container (archives, Harbor job dirs), made safe for the host
"""

from litecoder.sandbox.build import (
    build_image,
    image_exists,
    import_rootfs,
    labels_of_image,
    pull_image,
)
from litecoder.sandbox.container import ContainerLimits, ExecResult, Sandbox
from litecoder.sandbox.engine import (
    CAPS,
    LABEL,
    PROJECT_LABEL,
    BuildError,
    DiskQuotaUnsupported,
    DockerUnavailable,
    SandboxError,
    cleanup_on_signals,
    container_host,
    disk_quota_problem,
    docker_client,
    image_labels,
    labels,
    remove_labelled,
    remove_orphans,
    require_disk_quota,
    set_project,
)
from litecoder.sandbox.untrusted import Refusal, extract_archive, sanitize_tree

__all__ = [
    "CAPS",
    "LABEL",
    "PROJECT_LABEL",
    "BuildError",
    "ContainerLimits",
    "DiskQuotaUnsupported",
    "DockerUnavailable",
    "ExecResult",
    "Refusal",
    "Sandbox",
    "SandboxError",
    "build_image",
    "cleanup_on_signals",
    "container_host",
    "disk_quota_problem",
    "docker_client",
    "extract_archive",
    "image_exists",
    "image_labels",
    "import_rootfs",
    "labels",
    "labels_of_image",
    "pull_image",
    "remove_labelled",
    "remove_orphans",
    "require_disk_quota",
    "sanitize_tree",
    "set_project",
]
