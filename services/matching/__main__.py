"""python -m services.matching"""

from services.common.runtime import serve
from services.matching.api import router
from services.matching.domain.instruments import load
from services.matching.service import Matching

if __name__ == "__main__":
    serve("matching", 8102, lambda kernel: Matching(kernel.pool, load()), router, "tonne matching")
