"""python -m services.registry [serve | replay [--from-snapshot]]"""

from services.common.cli import main
from services.registry.api import router
from services.registry.service import Registry

if __name__ == "__main__":
    main("registry", 8101, Registry, router)
