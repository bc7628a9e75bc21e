"""python -m services.registry [serve | replay [--from-snapshot]]"""

from functools import partial

from services.common.cli import main
from services.common.periodic import stop
from services.common.runtime import Kernel
from services.registry.api import router
from services.registry.scheduler import Scheduler
from services.registry.service import Registry


def serving(kernel: Kernel) -> Registry:
    """The registry with its scheduler of due transfers."""
    registry = Registry(kernel)
    kernel.on_stop.append(partial(stop, Scheduler(registry).start()))
    return registry


if __name__ == "__main__":
    main("registry", 8101, Registry, router, serving)
