"""python -m services.settlement"""

from services.common.runtime import Kernel, serve
from services.settlement.api import router
from services.settlement.service import Settlement


class SettlementProcess(Settlement):
    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel.pool)
        self.router = router(self)


if __name__ == "__main__":
    serve("settlement", 8103, SettlementProcess, "tonne settlement")
