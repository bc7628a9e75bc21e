"""python -m services.matching [serve | replay [--from-snapshot]]"""

from services.common.cli import main
from services.matching.api import router
from services.matching.service import build

if __name__ == "__main__":
    main("matching", 8102, build, router)
