"""Where fine-tuning starts: ``--init default`` (or any ensemble) -> the member of the same
architecture."""

from __future__ import annotations

from typing import Any

from lensscan import modelcard
from lensscan.errors import ModelError
from lensscan.io import storage


def resolve_init(init: str, arch: str, arch_kwargs: dict[str, Any], name: str) -> str:
    """The member folder a run of ``arch`` starts from.

    ``init`` is a member folder (returned as is), an ensemble folder, or ``default`` (the bundled
    ensemble). From an ensemble the member named ``name`` is taken when it has the same
    architecture and arguments, else the first member that has them (the bundled ensemble:
    ``resnet`` -> ``resnet_s0``, ``multiscale_resnet`` -> ``msresnet_s1``).
    """
    url = modelcard.resolve(init)
    card = modelcard.read_card(url)
    if card.kind != "ensemble":
        return url
    fits = []
    for m in card.members or ():
        member = storage.join(url, m.path)
        mcard = modelcard.read_card(member)
        if mcard.arch == arch and (mcard.arch_kwargs or {}) == arch_kwargs:
            fits.append((m.name != name, member))
    if not fits:
        have = ", ".join(m.name for m in card.members or ())
        raise ModelError(f"{init}: no member of this ensemble ({have}) is a {arch!r} "
                         f"{arch_kwargs or ''} to start from")
    return sorted(fits, key=lambda f: f[0])[0][1]
