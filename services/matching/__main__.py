"""python -m services.matching"""

from services.common.runtime import Kernel, serve
from services.matching.api import router
from services.matching.domain.instruments import load
from services.matching.service import Matching


class MatchingProcess(Matching):
    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel.pool, load())
        self.router = router(self)


if __name__ == "__main__":
    serve("matching", 8102, MatchingProcess, "tonne matching")
