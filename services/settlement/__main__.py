"""python -m services.settlement"""

from services.common.runtime import serve
from services.settlement.api import router
from services.settlement.service import Settlement

if __name__ == "__main__":
    serve("settlement", 8103, lambda kernel: Settlement(kernel.pool), router, "tonne settlement")
