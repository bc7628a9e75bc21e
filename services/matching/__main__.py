"""python -m services.matching [serve | replay [--from-snapshot]]"""

from functools import partial

from services.common.cli import main
from services.common.periodic import stop
from services.common.runtime import Kernel
from services.matching.api import router
from services.matching.expiry import Expiry
from services.matching.service import Matching, build


def serving(kernel: Kernel) -> Matching:
    """Matching with the timer that expires GTD orders."""
    matching = build(kernel)
    kernel.on_stop.append(partial(stop, Expiry(matching).start()))
    return matching


if __name__ == "__main__":
    main("matching", 8102, build, router, serving)
