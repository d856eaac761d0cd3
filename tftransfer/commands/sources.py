"""``sources``: every source name ``transfer --source`` accepts, local and published.

    python main.py sources          # a table on stdout, then the JSON line
    python main.py sources --json   # only the JSON line, one object per source
"""

from __future__ import annotations

# "behaviour": a published model's behavioural check (checked / unverified); "-" for a local one.
_COLUMNS = ("name", "kind", "arch", "trained on", "threat", "eps", "clean acc", "on disk",
            "behaviour")


def register(subparsers):
    parser = subparsers.add_parser(
        "sources", help="list the source models you can pass to --source",
        description="List every source name that transfer, tune and evaluate accept: the local "
                    "model directories (saved_models/ in the current directory or the "
                    "checkout, and $TFTRANSFER_MODELS; described by each one's source.json or "
                    "config.json) and the published ImageNet models (downloaded and converted "
                    "into $TFTRANSFER_CACHE on first use), with architecture, threat model, "
                    "eps, clean accuracy on the data it was trained on, and whether it is on "
                    "disk already. A path to any model directory works as --source too.")
    parser.add_argument("--json", action="store_true",
                        help="print only the JSON line (every field of every source)")
    parser.set_defaults(run=run)
    return parser


def run(args) -> dict:
    """Runs ``sources``; prints the table unless ``--json``; returns the listing."""
    from tftransfer.sources import hub
    from tftransfer.sources import published
    from tftransfer.sources import registry as sources

    rows = [hub.describe(source) for source in hub.catalogue()]
    if not args.json:
        print(_table(rows))
        print(f"\ndefault --source: {sources.DEFAULT_SOURCE} for targets of at most "
              f"{sources.SMALL_IMAGE_MAX} px, {sources.PHOTO_SOURCE} for larger ones")
    return {"sources": rows if args.json else [row["name"] for row in rows],
            "models_dirs": [str(p) for p in sources.models_dirs()],
            "cache": str(published.cache_root())}


def _table(rows: list[dict]) -> str:
    """The rows as aligned plain-text columns."""
    cells = [_COLUMNS] + [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in cells)


def _cells(row: dict) -> tuple:
    accuracy = "?" if row["clean_accuracy"] is None else f"{100 * row['clean_accuracy']:.1f}%"
    trained_on = row["dataset"] + (f" {row['image_size']}px" if row["image_size"] else "")
    return (row["name"], row["kind"], row["arch"], trained_on or "?", row["attack"],
            row["eps_label"], accuracy, row["on_disk"], row["behaviour_check"] or "-")
