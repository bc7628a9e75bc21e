"""python -m services.compliance [serve | replay [--from-snapshot]]"""

from services.common.cli import main
from services.compliance.api import router
from services.compliance.service import build

if __name__ == "__main__":
    main("compliance", 8104, build, router)
