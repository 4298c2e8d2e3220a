"""The site table: where a transplant reads and where it writes.

A site is one row: its name, the value of block `source_layer` whose last
position is read from the source prompt, and the value of block `target_layer`
that is overwritten at the target prompt's last position. Every module reads
this table (`xtl.checks` for the names, `xtl.model` for the hook names,
`xtl.sweeping` and `xtl.engine` for where the batched engine writes), so adding
a site is adding one row:

    sites.TABLE["resid-mid"] = sites.SiteRow("resid-mid", read=RESID_MID, write=RESID_MID)

It needs no torch: the command line checks site names before importing it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xtl.errors import XtlError

# The values of one block, as TransformerLens names them (`blocks.{layer}.<point>`).
RESID_PRE = "hook_resid_pre"
ATTN_OUT = "hook_attn_out"
RESID_MID = "hook_resid_mid"
MLP_OUT = "hook_mlp_out"
RESID_POST = "hook_resid_post"

# The values of one block the batched engine (`xtl.sweeping`) can overwrite, in the order it computes them.
ENGINE_WRITE_POINTS = (RESID_PRE, ATTN_OUT, RESID_MID, MLP_OUT, RESID_POST)


@dataclass(frozen=True)
class SiteRow:
    """One site: the point read at the source layer and the point written at the target layer."""

    name: str
    read: str
    write: str

    @property
    def changes_keys_values(self) -> bool:
        """Whether the write changes the target layer's keys and values (it writes the residual entering it)."""
        return self.write == RESID_PRE


TABLE: dict[str, SiteRow] = {
    row.name: row
    for row in (
        SiteRow("ffn", read=MLP_OUT, write=MLP_OUT),
        SiteRow("attn", read=ATTN_OUT, write=ATTN_OUT),
        # The public code's "attention" wrapper aliases the residual stream: what it
        # stores is resid_mid, and it writes that over the target's attention output.
        SiteRow("attn-paper", read=RESID_MID, write=ATTN_OUT),
    )
}

Site = Literal["ffn", "attn", "attn-paper"]  # xtl's own sites, for type hints


def names() -> tuple[str, ...]:
    """The sites of the table, in its order."""
    return tuple(TABLE)


def check_site(site: str) -> str:
    if site not in TABLE:
        raise XtlError(f"unknown site {site!r}: the sites are {', '.join(TABLE)}.")
    return site


def row(site: str) -> SiteRow:
    return TABLE[check_site(site)]


def engine_write_point(site: str) -> str:
    """Where the site writes, refused in one sentence when the batched engine cannot write there."""
    point = row(site).write
    if point not in ENGINE_WRITE_POINTS:
        raise XtlError(
            f"site {site!r} writes at blocks.0.{point}, which xtl.sweep's batched engine does not implement "
            f"(it writes at {', '.join(ENGINE_WRITE_POINTS)}): run it with xtl.transplant."
        )
    return point


def __getattr__(name: str):
    if name == "SITES":  # the names as they are now, rows added included
        return names()
    raise AttributeError(f"module 'xtl.sites' has no attribute {name!r}")
