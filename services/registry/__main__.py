"""python -m services.registry"""

from services.common.runtime import serve
from services.registry.api import router
from services.registry.service import Registry

if __name__ == "__main__":
    serve("registry", 8101, lambda kernel: Registry(kernel.pool), router, "tonne registry")
