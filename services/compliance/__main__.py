"""python -m services.compliance"""

from services.common.runtime import serve
from services.compliance.api import router
from services.compliance.domain.screening import Policy
from services.compliance.service import Compliance

if __name__ == "__main__":
    serve("compliance", 8104, lambda kernel: Compliance(kernel.pool, Policy.load()), router, "tonne compliance")
