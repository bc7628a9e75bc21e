"""python -m services.registry"""

from services.common.runtime import Kernel, serve
from services.registry.api import router
from services.registry.service import Registry


class RegistryProcess(Registry):
    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel.pool)
        self.router = router(self)


if __name__ == "__main__":
    serve("registry", 8101, RegistryProcess, "tonne registry")
