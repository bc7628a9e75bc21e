"""python -m services.settlement [serve | replay [--from-snapshot]]"""

from services.common.cli import main
from services.settlement.api import router
from services.settlement.service import Settlement

if __name__ == "__main__":
    main("settlement", 8103, Settlement, router)
