"""python -m services.compliance"""

from services.common.runtime import Kernel, serve
from services.compliance.api import router
from services.compliance.domain.screening import Policy
from services.compliance.service import Compliance


class ComplianceProcess(Compliance):
    def __init__(self, kernel: Kernel) -> None:
        super().__init__(kernel.pool, Policy.load())
        self.router = router(self)


if __name__ == "__main__":
    serve("compliance", 8104, ComplianceProcess, "tonne compliance")
