"""Regenerate tests/spec_cases.json: each header's expected result from the Python parser.

The headers are the list below; the expected spec or error message comes from
mage_nb.engine.spec.parse_header, so the vectors are right by construction, and the
TypeScript parser (labextension/src/header.ts) must give the same. argparse's `invalid
choice` wording differs between Python versions: those cases keep only the common prefix.

    .venv/bin/python labextension/scripts/make_spec_cases.py
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from mage_nb.engine.errors import HeaderError
from mage_nb.engine.spec import parse_header

HEADERS = [
    "%%block loader users --dynamic",
    "%%loader users --dynamic",
    "%%transformer anonymize_user_data",
    "%%exporter engagement_report",
    "%%block custom helper_step",
    "%%block sql top_users --connection warehouse",
    "%%block sql q",
    "%%transformer score --reduce",
    "%%transformer score --reduce concat",
    "%%transformer score --reduce sum --reduce-policy partial",
    "%%transformer score --reduce --dynamic",
    "%%transformer score --reduce=merge",
    "%%transformer score --reduce my_reducer",
    "%%transformer joined --upstream a b c",
    "%%transformer joined --upstream=a",
    "%%transformer joined --upstream a --upstream b",
    "%%transformer t --retries 3 --retry-delay 0.5 --timeout 10 --max-concurrency 2",
    "%%transformer t --retries=0 --retry-delay=0 --timeout=1e3",
    "%%loader l --dynamic --max-children 100 --on-overflow truncate --window 10",
    "%%loader l --executor processes --no-run",
    "%%block transformer t --executor dask",
    "  %%loader padded   --dynamic  ",
    "block loader no_percent",
    "loader no_percent",
    "%%loader 'quoted_name' --dynamic",
    '%%loader "dq" --reduce "concat"',
    "%%loader naïve",
    "%%transformer t --reduce list --reduce list",
    "%%transformer t --retries 1_000",
    # errors
    "",
    "%%block",
    "%%block widget users",
    "%%block loader",
    "%%loader --dynamic",
    "%%loader",
    "%%sql users",
    "%%loader 1users",
    "%%loader class",
    "%%loader context",
    "%%loader test",
    "%%loader users extra",
    "%%loader users --dynamc",
    "%%loader users --dyn",
    "%%loader users --dynamic=yes",
    "%%loader users --retries",
    "%%loader users --retries x",
    "%%loader users --retries -1",
    "%%loader users --retries 1.5",
    "%%loader users --max-concurrency 0",
    "%%loader users --timeout 0",
    "%%loader users --timeout -2",
    "%%loader users --retry-delay -0.5",
    "%%loader users --executor gpu",
    "%%transformer t --reduce-policy partial",
    "%%transformer t --reduce all-of-it",
    "%%transformer t --reduce --reduce-policy some",
    "%%transformer t --upstream",
    "%%transformer t --upstream a 2b",
    "%%transformer t --upstream a b a",
    "%%transformer t --upstream a -x",
    "%%loader users --connection db",
    "%%loader users --max-children 5",
    "%%loader users --on-overflow truncate",
    "%%loader users --window 3",
    "%%loader users --dynamic --on-overflow drop",
    "%%loader 'unclosed --dynamic",
    '%%loader "unclosed',
    "%%loader users \\",
]


def case(header: str) -> dict[str, object]:
    try:
        spec = parse_header(header)
    except HeaderError as exc:
        message = str(exc)
        if "invalid choice" in message:
            return {"header": header, "error_prefix": message.split(" (choose from")[0]}
        return {"header": header, "error": message}
    fields = dataclasses.asdict(spec)
    for key in ("source", "origin", "header"):
        fields.pop(key)
    if fields["upstream"] is not None:
        fields["upstream"] = list(fields["upstream"])
    return {"header": header, "spec": fields}


def main() -> None:
    out = Path(__file__).resolve().parents[2] / "tests" / "spec_cases.json"
    cases = [case(h) for h in HEADERS]
    out.write_text(json.dumps(cases, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(cases)} cases written to {out}")


if __name__ == "__main__":
    main()
