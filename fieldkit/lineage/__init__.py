"""Trial lineage: the SQLite store, the queries (best on validation, chain, latest), the card, and the TSV bridge."""

from fieldkit.lineage.card import CardSizes, render_card
from fieldkit.lineage.provenance import Provenance, capture_provenance
from fieldkit.lineage.queries import LineageError
from fieldkit.lineage.records import (
    COMPLETED_STATUSES,
    STATUSES,
    TRIAL_KINDS,
    Direction,
    Status,
    Trial,
    TrialKind,
)
from fieldkit.lineage.store import DEFAULT_DB, LineageStore
from fieldkit.lineage.tsv import TSV_COLUMNS, read_tsv, write_tsv

__all__ = [
    "COMPLETED_STATUSES",
    "DEFAULT_DB",
    "STATUSES",
    "TRIAL_KINDS",
    "TSV_COLUMNS",
    "CardSizes",
    "Direction",
    "LineageError",
    "LineageStore",
    "Provenance",
    "Status",
    "Trial",
    "TrialKind",
    "capture_provenance",
    "read_tsv",
    "render_card",
    "write_tsv",
]
