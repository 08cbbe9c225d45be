"""The ``beam-ml`` command: train | derive | predict | evaluate | inspect | tune.

Hyperparameters are the algorithm config's fields and ``derive``'s parameters, under
their SageMaker names, read from the code itself, so every registered algorithm gets
its command line without extra code. Options the command does not know are handed to
Beam as pipeline options (``--runner``, ``--direct_num_workers`` ...) after checking
that Beam knows them: a typo is one clear line, not a silently ignored flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import logging
import math
import numbers
import os
import re
import shutil
import signal
import sys
import threading
import time
from typing import Any

from beam_ml.io import formats

__all__ = ["main"]

_LOG = logging.getLogger("beam_ml.cli")
_FORMATS = formats.names()
_EXTENSIONS = {
    ".csv": "csv",
    ".txt": "csv",
    ".libsvm": "libsvm",
    ".svm": "libsvm",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".npy": "npy",
    ".parquet": "parquet",
    ".pbr": "recordio",  # SageMaker's recordIO-protobuf (the SDK's record_set writes .pbr)
    ".rec": "recordio",
    ".recordio": "recordio",
}


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a mistake is one line (the usage is one --help away)."""

    def error(self, message: str) -> None:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# --- reading the algorithms' parameters from their code --------------------------------
def _parse_bool(text: str) -> bool:
    lowered = str(text).lower()
    if lowered in ("true", "1", "yes", "y"):
        return True
    if lowered in ("false", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


_TYPES = {"int": int, "float": float, "str": str, "bool": _parse_bool}


def _listed(kind: Any) -> Any:
    """A comma-separated list of ``kind`` values, as a tuple ('0.1,0.5,0.9')."""

    def convert(text: str) -> tuple:
        try:
            return tuple(kind(part.strip()) for part in text.split(",") if part.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__}s, got {text!r}"
            ) from None

    convert.__name__ = f"{kind.__name__}s"
    return convert


def _word_or_ints(text: str) -> Any:
    """A free parameter (``Any``: DeepAR's cardinality, num_dynamic_feat): a word such
    as 'auto', an int, or comma-separated ints (a tuple)."""
    if re.fullmatch(r"\s*\d+\s*", text):
        return int(text)
    if re.fullmatch(r"\s*\d+\s*(,\s*\d+\s*)+,?\s*", text):
        return _listed(int)(text)
    return text


_word_or_ints.__name__ = "auto|ignore|ints"


def _converter(annotation: Any) -> Any:
    """The argparse type for a (string) annotation: 'int | None' -> int; a union such as
    'float | str' tries each type in turn (e.g. a weight or the word 'balanced');
    'tuple[float, ...]' a comma-separated list; 'Any' a word, an int or ints."""
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "str")
    tupled = re.fullmatch(r"tuple\[(\w+), \.\.\.\]", name)
    if tupled:
        return _listed(_TYPES.get(tupled.group(1), str))
    if name == "Any":
        return _word_or_ints
    kinds = [_TYPES.get(p.strip(), str) for p in name.split("|") if p.strip() != "None"] or [str]
    if len(kinds) == 1:
        return kinds[0]

    def convert(text: str) -> Any:
        for kind in kinds:
            try:
                return kind(text)
            except (ValueError, argparse.ArgumentTypeError):
                continue
        raise argparse.ArgumentTypeError(f"invalid value {text!r}")

    convert.__name__ = "|".join("bool" if k is _parse_bool else k.__name__ for k in kinds)
    return convert


def _param_docs(obj: Any) -> dict[str, tuple[str, str]]:
    """``name : type`` entries of a numpydoc Parameters section: (type, first sentence)."""
    docs: dict[str, tuple[str, list[str]]] = {}
    current = None
    for line in (inspect.getdoc(obj) or "").splitlines():
        match = re.match(r"^(\w+) : (.*)$", line)
        if match:
            current = match.group(1)
            docs[current] = (match.group(2), [])
        elif current and line.startswith("    "):
            docs[current][1].append(line.strip())
        else:
            current = None
    return {
        name: (kind, " ".join(lines).replace("``", "").split(". ")[0].rstrip("."))
        for name, (kind, lines) in docs.items()
    }


def _choices(type_line: str) -> list[str] | None:
    """['a', 'b'] from a numpydoc type such as "{'a', 'b'}"."""
    return re.findall(r"'([^']+)'", type_line) if type_line.startswith("{") else None


def _config_params(config_class: type) -> list[tuple[str, Any, Any, str, list | None]]:
    docs = _param_docs(config_class)
    out = []
    for field in dataclasses.fields(config_class):
        required = field.default is dataclasses.MISSING
        kind, text = docs.get(field.name, ("", ""))
        out.append(
            (
                field.name,
                _converter(field.type),
                None if required else field.default,
                ("(required) " if required else "") + text,
                _choices(kind),
            )
        )
    return out


def _derive_params(state_class: type, skip_config: bool = False) -> list[tuple[str, Any, Any, str]]:
    """derive()'s parameters; with ``skip_config``, minus those the config already has."""
    docs = _param_docs(state_class.derive)
    config_names = (
        {f.name for f in dataclasses.fields(state_class.CONFIG)} if skip_config else set()
    )
    out = []
    for name, param in inspect.signature(state_class.derive).parameters.items():
        if name == "self" or param.kind is param.VAR_KEYWORD or name in config_names:
            continue
        kind, text = docs.get(name, ("", ""))
        out.append((name, _converter(param.annotation), param.default, text, _choices(kind)))
    return out


def _shown(default: Any) -> str:
    """A default as the command line spells it (booleans as true/false)."""
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def _default_note(default: Any, help_text: str, trained: bool = False) -> str:
    """' (default: X)' for the help, unless the text already says what the default is."""
    if "(default" in help_text.lower():
        return ""
    if default is None:
        return " (default: the trained value)" if trained else " (default: not set)"
    return f" (default: {_shown(default)})"


_FEATURE_DIM_HELP = (
    "Number of features; when omitted, found from the input: the columns of CSV, JSON "
    "lines, .npy and Parquet; the largest index of LIBSVM files up to 256 MiB (and up "
    "to 2^20 features). LIBSVM standard input with --streaming, Kafka and Pub/Sub "
    "need it"
)


def _add_flag(
    group: argparse._ArgumentGroup, name: str, kind: Any, choices: Any, help_text: str
) -> None:
    """One hyperparameter flag: unset (None) unless given, so defaults stay the code's."""
    metavar = "BOOL" if kind is _parse_bool else kind.__name__.upper()
    group.add_argument(
        f"--{name}",
        type=kind,
        default=None,
        choices=choices,
        metavar="{" + ",".join(choices) + "}" if choices else metavar,
        help=help_text.replace("%", "%%"),
    )


def _add_params(group: argparse._ArgumentGroup, params: list) -> None:
    for name, kind, default, help_text, choices in params:
        if f"--{name}" in group._option_string_actions:
            continue  # already a reader option (mini_batch_size): one flag sets both
        if name == "feature_dim":  # the command finds it from the input when it can
            help_text = _FEATURE_DIM_HELP
        required = help_text.startswith("(required)")
        shown = ""
        if not required and name != "feature_dim":
            shown = _default_note(default, help_text)
        _add_flag(group, name, kind, choices, help_text + shown)


def _add_derive_params(group: argparse._ArgumentGroup, algos: dict[str, type]) -> None:
    """derive's parameters, each once, labelled with the algorithms it applies to and
    each one's default (read from its derive() signature, as the parser is)."""
    by_name: dict[str, list[tuple[str, Any, Any, str, Any]]] = {}
    for family, cls in sorted(algos.items()):
        config_names = {f.name for f in dataclasses.fields(cls.CONFIG)}
        for name, kind, default, text, choices in _derive_params(cls):
            note = _default_note(default, text, trained=name in config_names)
            by_name.setdefault(name, []).append((family, kind, text, note, choices))
    for name, entries in by_name.items():
        families_ = [e[0] for e in entries]
        texts = {e[2] for e in entries}
        notes = {e[3] for e in entries}
        if len(texts) == 1 and len(notes) == 1:
            help_text = f"[{', '.join(families_)}] {entries[0][2]}{entries[0][3]}"
        elif len(texts) == 1 and all(notes):  # one meaning, defaults that differ by algorithm
            per = "; ".join(f"{e[0]}: {e[3].strip()[len('(default: '):-1]}" for e in entries)
            help_text = f"[{', '.join(families_)}] {entries[0][2]} (defaults: {per})"
        else:
            help_text = " | ".join(f"[{f}] {t}{n}" for f, _, t, n, _ in entries)
        choices = None
        if any(e[4] for e in entries):
            choices = list(dict.fromkeys(c for e in entries for c in (e[4] or [])))
        _add_flag(group, name, entries[0][1], choices, help_text)


# --- Beam options ----------------------------------------------------------------------
def _beam_options(unknown: list[str]) -> list[str]:
    """Check that every leftover option is a Beam pipeline option; return them."""
    if not unknown:
        return []
    from apache_beam.options.pipeline_options import PipelineOptions

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    classes, seen = [PipelineOptions], set()
    while classes:
        cls = classes.pop()
        if cls in seen:
            continue
        seen.add(cls)
        classes.extend(cls.__subclasses__())
        try:
            cls._add_argparse_args(parser)
        except argparse.ArgumentError:
            pass  # an option two classes both declare
    _, rest = parser.parse_known_args(unknown)
    if rest:
        bad = next((a for a in rest if a.startswith("-")), rest[0])
        raise UsageError(
            f"unrecognized option {bad!r} (not a beam-ml option nor a Beam pipeline option; see --help)"
        )
    return unknown


# --- reader options ----------------------------------------------------------------------
_DELIMITER_NAMES = {"tab": "\t", "space": " ", "comma": ",", "semicolon": ";", "pipe": "|"}
_DELIMITER_FORMS = (
    "one character, a name (tab, space, comma, semicolon, pipe) or an escape "
    "(\\t, \\x1f, \\u00a6; a doubled backslash too)"
)


def _delimiter(text: str) -> str:
    r"""The one-character delimiter that ``text`` spells: ``,``, ``tab``, ``\t`` (as the
    shell passes ``'\t'``), ``\\t``, ``\x1f``, ``\u00a6``..."""
    char = _DELIMITER_NAMES.get(text.strip().lower()) if len(text) > 1 else text
    if char is None and text.startswith("\\"):
        escape = re.sub(r"^\\+", r"\\", text)  # '\\t' -> '\t': one escape, not two
        try:
            char = escape.encode("ascii").decode("unicode_escape")
        except (UnicodeError, ValueError):
            char = None
    if char is None or len(char) != 1 or char in '\r\n"':
        raise argparse.ArgumentTypeError(
            f"cannot use {text!r} as the CSV delimiter; give {_DELIMITER_FORMS}; not a "
            "quote nor a newline"
        )
    return char


def _add_reader_args(
    parser: argparse.ArgumentParser, dead_letters: str = "<output>.dead_letters.jsonl"
) -> None:
    group = parser.add_argument_group("input")
    group.add_argument(
        "--input",
        required=True,
        help="file glob (local, gs://, s3://), several with commas; '-' for standard "
        "input; kafka://host:port/topic[?start=earliest]; "
        "kinesis://stream[?start=trim_horizon|latest|at_timestamp:MS&endpoint=URL&region=R]; "
        "or a database (an SQLAlchemy "
        "URL or a SQLite file) with --query",
    )
    group.add_argument(
        "--query", help="SQL SELECT to read from the --input database (numeric columns)"
    )
    group.add_argument(
        "--split_column",
        help="integer key column of --query's result: read it in parallel by key ranges",
    )
    group.add_argument(
        "--format", choices=_FORMATS, help="record format (default: from the file extension)"
    )
    group.add_argument(
        "--label_column",
        help="index (or CSV header name) of the label column, excluded from the features",
    )
    group.add_argument(
        "--header",
        choices=("auto", "true", "false"),
        default="auto",
        help="CSV header line (default: auto)",
    )
    group.add_argument(
        "--delimiter",
        type=_delimiter,
        default=",",
        metavar="CHAR",
        help=f"CSV field delimiter: {_DELIMITER_FORMS} (default: ,)",
    )
    group.add_argument(
        "--zero_based",
        type=_parse_bool,
        default=False,
        metavar="BOOL",
        help="LIBSVM indices start at 0 (default: false)",
    )
    group.add_argument(
        "--mini_batch_size",
        type=int,
        default=None,  # None: 10,000-row blocks, and the algorithm's own SGD mini-batch
        metavar="ROWS",
        help="rows per block (default: 10000); for algorithms with a mini_batch_size "
        "hyperparameter (SGD), also the rows per step",
    )
    group.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first malformed record instead of setting it aside",
    )
    group.add_argument(
        "--max_bad_fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="stop with an error when more than this fraction of a file's records (and at "
        "least 10) are malformed (default: 0.5; 1: never)",
    )
    group.add_argument(
        "--categorical_columns",
        metavar="COLUMNS",
        help="CSV, JSON lines (files, standard input): comma-separated indices or header "
        "names (JSON keys) of columns whose values are labels, hashed into --feature_dim "
        "columns (default 2^20) after the numeric ones: the rows become sparse",
    )
    group.add_argument(
        "--missing",
        choices=("error", "zero"),
        default="error",
        help="an empty numeric field (CSV ,, or JSON null): the record is set aside "
        "(error, the default) or the field reads as 0 (zero); an empty label is set aside",
    )
    group.add_argument(
        "--series_start",
        metavar="TIMESTAMP",
        help="series_csv (the M4 layout): the start of every series (default: 1750-01-01 "
        "00:00:00); the series formats' frequency is the model's time_freq",
    )
    group.add_argument(
        "--dead_letters",
        metavar="PATH",
        help=f"where malformed records go as JSON lines (default: {dead_letters})",
    )


def _add_streaming_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "continuous training (--streaming: Kafka, Pub/Sub or a pipe; Ctrl-C or SIGTERM "
        "stops after the running snapshot)"
    )
    group.add_argument(
        "--streaming",
        action="store_true",
        help="keep training as records arrive: every snapshot is checkpointed in --output "
        "with the source positions (a restart goes on from there), derived into "
        "--model_output and optionally announced on --publish",
    )
    group.add_argument(
        "--snapshot_every",
        type=_seconds,
        default=30.0,
        metavar="DURATION",
        help="time between snapshots, e.g. 30s, 2m, 500ms (default: 30s)",
    )
    group.add_argument(
        "--snapshot_every_rows",
        type=int,
        metavar="ROWS",
        help="also snapshot as soon as this many records wait",
    )
    group.add_argument(
        "--keep", type=int, default=5, help="snapshots kept in --output (default: 5)"
    )
    group.add_argument(
        "--window",
        type=int,
        metavar="SNAPSHOTS",
        help="sliding window (PCA, K-Means): the model is derived from the rows of the last "
        "this many snapshots only",
    )
    group.add_argument(
        "--model_output",
        metavar="DIR",
        help="where each model is written (default: <output>.model)",
    )
    group.add_argument(
        "--publish",
        metavar="URL",
        help="announce each model on kafka://host:port/topic or pubsub://projects/P/topics/T",
    )
    group.add_argument(
        "--stop_after", type=_seconds, metavar="DURATION", help="stop after this long"
    )
    group.add_argument(
        "--stop_when_idle",
        type=_seconds,
        metavar="DURATION",
        help="stop once no record arrived for this long",
    )


def _stream_reader(
    args: argparse.Namespace, feature_dim: int | None, label: Any, freq: str | None = None
) -> Any:
    """The reader for standard input, a Kafka URL or a SQL query; None for files."""
    source = args.input
    if (args.categorical_columns or args.missing != "error") and (
        args.query is not None or source.startswith(("kafka://", "kinesis://"))
    ):
        raise UsageError("--categorical_columns and --missing apply to files and --input -")
    if args.query is not None or args.split_column is not None:
        from beam_ml.io.sql import ReadSql

        if args.query is None:
            raise UsageError("--split_column needs --query (and a database as --input)")
        return ReadSql(
            source,
            args.query,
            label_column=label,
            split_column=args.split_column,
            block_size=args.mini_batch_size or 10_000,
            strict=args.strict,
            max_bad_fraction=args.max_bad_fraction,
        )
    if source != "-" and not source.startswith(("kafka://", "kinesis://")):
        if re.match(r"^(sqlite|postgres\w*|mysql|mariadb|mssql|oracle)[+:]", source):
            raise UsageError(f"--input {source!r} is a database: give --query 'SELECT ...'")
        return None
    if args.format is None:
        raise UsageError(f"--input {source!r} needs --format ({', '.join(_FORMATS)})")
    if source == "-":
        from beam_ml.io.pipes import ReadPipe

        return ReadPipe(args.format, **_file_reading(args, label, feature_dim, args.format, freq))
    if freq is not None:
        raise UsageError("series come through a pipe (--input -) or files, not Kafka or Kinesis yet")
    # --resume continues where the checkpoint's read ended: nothing lost, nothing twice
    stored = None
    if getattr(args, "resume", None) and "start=" not in source:
        from beam_ml.io.checkpoints import read_manifest

        stored = read_manifest(args.resume).get("extra", {}).get("source_positions") or {}
    options: dict[str, Any] = {}
    if source.startswith("kinesis://"):
        from beam_ml.io.kinesis import ReadKinesis as read

        if stored is not None:
            options["positions"] = stored or None  # {shard: sequence number}
    else:
        from beam_ml.io.kafka import ReadKafka as read

        if stored is not None:  # {"topic:partition": offset}
            options["start"] = {
                (key.rsplit(":", 1)[0], int(key.rsplit(":", 1)[1])): int(offset)
                for key, offset in stored.items()
            }
    return read.from_url(
        source,
        args.format,
        **options,
        label_column=label,
        delimiter=args.delimiter,
        feature_dim=feature_dim,
        zero_based=args.zero_based,
        block_size=args.mini_batch_size or 10_000,
        strict=args.strict,
    )


# A series algorithm's files, by extension (the matrix formats' names are taken).
_SERIES_EXTENSIONS = {"jsonl": "deepar_jsonl", "parquet": "deepar_parquet"}


def _reader(
    args: argparse.Namespace, feature_dim: int | None = None, freq: str | None = None
) -> Any:
    """The reader of ``--input``; ``freq`` (a series model's time_freq) reads series:
    .json(l) and .parquet files as DeepAR's, the series formats with their frequency."""
    from beam_ml.io.sources import ReadBlocks

    label = args.label_column
    if label is not None and re.fullmatch(r"-?\d+", label):
        label = int(label)
    args._format = args.format
    stream = _stream_reader(args, feature_dim, label, freq)
    if stream is not None:
        return stream
    patterns = [p for p in args.input.split(",") if p]
    fmt = args.format
    if fmt is None:
        stem = patterns[0][:-3] if patterns[0].endswith(".gz") else patterns[0]
        fmt = _EXTENSIONS.get(os.path.splitext(stem)[1].lower())
        if freq is not None:
            fmt = _SERIES_EXTENSIONS.get(fmt or "")
        if fmt is None:
            raise UsageError(
                f"cannot tell the format of {patterns[0]!r}; give --format ({', '.join(_FORMATS)})"
            )
        args._format = fmt
    return ReadBlocks(
        patterns if len(patterns) > 1 else patterns[0],
        fmt,
        **_file_reading(args, label, feature_dim, fmt, freq),
    )


def _file_reading(
    args: argparse.Namespace, label: Any, feature_dim: int | None, fmt: str, freq: str | None
) -> dict[str, Any]:
    """The reading options of files and of standard input (ReadBlocks, ReadPipe)."""
    return dict(
        label_column=label,
        header=args.header,
        delimiter=args.delimiter,
        feature_dim=feature_dim,
        zero_based=args.zero_based,
        block_size=args.mini_batch_size or 10_000,
        strict=args.strict,
        max_bad_fraction=args.max_bad_fraction,
        categorical_columns=args.categorical_columns,
        missing=args.missing,
        **_series_reading(args, fmt, freq),
    )


def _series_reading(args: argparse.Namespace, fmt: str, freq: str | None) -> dict[str, Any]:
    """ReadBlocks' series options: the frequency for a series format (and a wide CSV's
    start); a series model given a matrix format is told so here, in one line."""
    if formats.get(fmt).series:
        if freq is None:
            raise UsageError(f"--format {fmt} reads time series: a series algorithm takes it")
        return {"freq": freq, "series_start": args.series_start}
    if freq is not None:
        series = [name for name in _FORMATS if formats.get(name).series]
        raise UsageError(f"a series model reads --format {' or '.join(series)}, not {fmt}")
    return {}


# --- output --------------------------------------------------------------------------------
class _OutputClosed(Exception):
    """Standard output's reader went away (``beam-ml inspect | head``)."""


def _finite(value: Any) -> Any:
    """``value`` with every NaN or infinity made None: JSON has neither (a metric with
    nothing to measure it on is null, not the invalid ``NaN``)."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return float(value) if math.isfinite(value) else None
    return value


def _json(value: Any, **options: Any) -> str:
    return json.dumps(_finite(value), allow_nan=False, default=float, **options)


def _emit(text: str) -> None:
    """One result on standard output, flushed now so a closed pipe is seen here."""
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise _OutputClosed from None


# --- running a pipeline ------------------------------------------------------------------
_TEMPORARY: list[str] = []  # this command's temporary folders, removed on every exit


def _pipeline(beam_args: list[str], kind: str = "run") -> tuple[Any, str]:
    """A Beam pipeline and this command's temporary folder (``beam_ml_<kind>_pid<pid>_*``),
    which holds Beam's own local folder too: both go on every exit, and when a ``kill -9``
    skips that, the next command removes them (the pid in the name is gone). Beam makes
    its folder when the pipeline is built and removes it only at the end of ``run``."""

    from beam_ml.core.runner import pipeline_options
    from beam_ml.io.pipes import pipeline_in
    from beam_ml.io.scratch import temp_dir

    scratch = temp_dir(kind)  # first removes the folders of killed runs
    _TEMPORARY.append(scratch)
    return pipeline_in(scratch, pipeline_options(beam_args)), scratch


def _sweep_sink_leftovers(path: str) -> None:
    """Remove the ``beam-temp-<name>-*`` folders that Beam's file sinks of earlier runs
    into ``path`` left beside it when they were killed (a finished write removes its own):
    called after this run's write of ``path`` finished. Local paths only."""
    folder, name = os.path.split(os.path.abspath(path))
    if "://" in path or not os.path.isdir(folder):
        return
    for entry in os.listdir(folder):
        if entry.startswith(f"beam-temp-{name}-") and os.path.isdir(os.path.join(folder, entry)):
            shutil.rmtree(os.path.join(folder, entry), ignore_errors=True)


def _run(pipeline: Any) -> Any:
    result = pipeline.run()
    result.wait_until_finish()
    return result


def _read_blocks(p: Any, args: argparse.Namespace, output: str, reader: Any) -> tuple[Any, Any]:
    """The input's blocks, and its malformed records (None with --strict), which are
    also written to ``--dead_letters`` (default: ``<output>.dead_letters.jsonl``)."""
    import apache_beam as beam

    args._dead_path = args.dead_letters or output.rstrip("/") + ".dead_letters.jsonl"
    if args.strict:
        return p | "Read" >> reader, None
    blocks, dead = p | "Read" >> reader.with_dead_letters()
    _ = (
        dead
        | "DeadLetterJson" >> beam.Map(lambda r: json.dumps(r, default=str))
        | "WriteDeadLetters"
        >> beam.io.WriteToText(
            # skip_if_empty: S3 refuses an empty multipart upload, Beam's way to write
            # an empty object (an empty local file was removed after the run anyway)
            args._dead_path,
            num_shards=1,
            shard_name_template="",
            skip_if_empty=True,
        )
    )
    return blocks, dead


def _report_reading(result: Any, args: argparse.Namespace, seconds: float) -> int:
    from beam_ml.core.runner import counter

    rows, bad = counter(result, "rows_read"), counter(result, "bad_records")
    records = counter(result, "records_read")  # == rows + bad: every record accounted for
    rate = rows / seconds if seconds > 0 else 0.0
    _LOG.info(
        "read %s records in %.1f s (%s rows/s): %s rows used, %s set aside",
        *(f"{records:,}", seconds, f"{rate:,.0f}", f"{rows:,}", f"{bad:,}"),
    )
    if bad:
        _LOG.warning("%s malformed records set aside in %s", f"{bad:,}", args._dead_path)
    elif os.path.exists(args._dead_path) and os.path.getsize(args._dead_path) == 0:
        os.remove(args._dead_path)
    _sweep_sink_leftovers(args._dead_path)
    return rows


# --- commands ----------------------------------------------------------------------------
def _train_config(
    cls: type, given: dict[str, Any], derive_defaults: dict[str, Any], resume: str | None, flag: str
) -> tuple[Any, dict[str, Any]]:
    """The config (and derive defaults) of a new training, or of the checkpoint it
    continues, whose hyperparameters the command line may repeat but not change; its
    runtime options (the device), which states never compare, it may."""
    from beam_ml.core.state import config_from_dict
    from beam_ml.io.checkpoints import read_manifest

    if resume:
        manifest = read_manifest(resume)
        if manifest["algorithm"] != cls.FAMILY:
            raise UsageError(
                f"{flag} {resume!r} holds a {manifest['algorithm']} state, not {cls.FAMILY}"
            )
        saved = manifest["config"]
        runtime = {f.name for f in dataclasses.fields(cls.CONFIG) if not f.compare}
        clash = {
            k: (v, saved[k]) for k, v in given.items() if k not in runtime and saved.get(k) != v
        }
        if clash:
            raise UsageError(
                f"{flag}: the checkpoint was trained with "
                + ", ".join(f"{k}={b!r} (not {a!r})" for k, (a, b) in clash.items())
            )
        here = {k: v for k, v in given.items() if k in runtime}
        defaults = {**manifest.get("extra", {}).get("derive_defaults", {}), **derive_defaults}
        return config_from_dict(cls.CONFIG, {**saved, **here}), defaults
    missing = [
        f.name
        for f in dataclasses.fields(cls.CONFIG)
        if f.default is dataclasses.MISSING and f.name not in given
    ]
    if missing:
        raise UsageError(f"train {cls.FAMILY} needs " + ", ".join(f"--{m}" for m in missing))
    return cls.CONFIG(**given), derive_defaults


def _series_freq(cls: type, config: Any) -> str | None:
    """A series algorithm's frequency (its readers need it); None for the others."""
    from beam_ml.core.series import SeriesBlock

    return config.time_freq if cls.BLOCK_KIND is SeriesBlock else None


def _needs_feature_dim(cls: type) -> bool:
    return any(
        f.name == "feature_dim" and f.default is dataclasses.MISSING
        for f in dataclasses.fields(cls.CONFIG)
    )


def _seconds(text: str) -> float:
    """'30s', '2m', '1h', '500ms' or a plain number of seconds."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(
            f"expected a duration such as 30s, 2m or 500ms; got {text!r}"
        )
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[match.group(2) or "s"]
    return float(match.group(1)) * scale


def _feed(args: argparse.Namespace, feature_dim: int | None, freq: str | None = None) -> Any:
    """The source of continuous training: Kafka, Pub/Sub or a pipe (``freq``: of the
    series of a series algorithm: point records on Kafka or Pub/Sub, any series format
    through a pipe)."""
    from beam_ml.io.kafka import KafkaFeed
    from beam_ml.io.pipes import PipeFeed
    from beam_ml.io.pubsub import PubSubFeed

    source, fmt = args.input, args.format
    if not (source == "-" or source.startswith(("kafka://", "pubsub://", "kinesis://"))):
        raise UsageError(
            f"--streaming reads kafka://..., pubsub://..., kinesis://... or - (standard input), "
            f"not {source!r}"
        )
    if args.query is not None or args.strict:
        raise UsageError(
            "--streaming takes no --query nor --strict (malformed records go to --dead_letters)"
        )
    if args.categorical_columns or args.missing != "error":
        raise UsageError("--streaming takes no --categorical_columns nor --missing yet")
    if fmt is None:
        raise UsageError(f"--input {source!r} needs --format (csv, jsonl, libsvm)")
    label = args.label_column
    if label is not None and re.fullmatch(r"-?\d+", label):
        label = int(label)
    options = {
        "label_column": label,
        "delimiter": args.delimiter,
        "feature_dim": feature_dim,
        "zero_based": args.zero_based,
        "block_size": args.mini_batch_size or 10_000,
    }
    if freq is not None and source != "-":
        options["freq"] = freq  # point records (others are refused by the feed)
    if source.startswith("kafka://"):
        return KafkaFeed(source, fmt, **options)
    if source.startswith("kinesis://"):
        from beam_ml.io.kinesis import KinesisFeed

        return KinesisFeed(source, fmt, **options)
    if source.startswith("pubsub://"):
        from beam_ml.io.pubsub import parse_pubsub_url

        # A crashed trainer's messages return after their lease: long enough for a
        # cycle, short enough for a restart to get them back soon.
        lease = max(10.0, 3 * args.snapshot_every + 10.0)
        subscription = parse_pubsub_url(source, expect="subscription")
        return PubSubFeed(subscription, fmt, lease_seconds=lease, **options)
    header = {"auto": "auto", "true": True, "false": False}[args.header]
    return PipeFeed(fmt, header=header, **options, **_series_reading(args, fmt, freq))


def _train_continuously(
    args: argparse.Namespace,
    beam_args: list[str],
    given: dict[str, Any],
    derive_defaults: dict[str, Any],
) -> int:
    from beam_ml.io.checkpoints import CheckpointNotFoundError, read_manifest
    from beam_ml.transforms.continuous import ContinuousTrainer

    cls = args.state_class
    if args.resume and os.path.abspath(args.resume) != os.path.abspath(args.output):
        raise UsageError("--streaming continues from --output itself; --resume is not needed")
    try:
        read_manifest(args.output)
        resume = args.output
    except CheckpointNotFoundError:
        resume = None
    config, derive_defaults = _train_config(cls, given, derive_defaults, resume, "--output")
    fmt = formats.get(args.format) if args.format else None
    if fmt is not None and not fmt.dense and getattr(config, "feature_dim", 0) is None:
        # Each cycle would find its own largest index: a later record with a larger
        # one than the first cycle's would not fit the model.
        raise UsageError(
            f"--streaming {fmt.name.upper()} input needs --feature_dim (the number of features): a "
            "stream cannot be scanned for its largest index before training starts"
        )
    feed = _feed(args, getattr(config, "feature_dim", None), _series_freq(cls, config))
    model_output = args.model_output or args.output.rstrip("/") + ".model"
    trainer = ContinuousTrainer(
        config,
        feed,
        args.output,
        snapshot_every_seconds=args.snapshot_every,
        snapshot_every_rows=args.snapshot_every_rows,
        keep=args.keep,
        window=args.window,
        model_output=model_output,
        derive_params=derive_defaults,
        publish=args.publish,
        stop_after_seconds=args.stop_after,
        stop_when_idle_seconds=args.stop_when_idle,
        pipeline_args=beam_args,
        dead_letters=args.dead_letters or args.output.rstrip("/") + ".dead_letters.jsonl",
        extra={"derive_defaults": derive_defaults},
    )
    started = time.time()
    trainer.run()
    _emit(
        _json(
            {
                "algorithm": cls.FAMILY,
                "output": args.output,
                "model_output": model_output,
                "snapshots": trainer.snapshots_written,
                "last_snapshot": trainer.snapshot,
                "n_seen": trainer.n_seen,
                "rows_read": trainer.rows_read,
                "bad_records": trainer.bad_records,
                "seconds": round(time.time() - started, 2),
            }
        )
    )
    return 0


def _given_params(args: argparse.Namespace, cls: type) -> tuple[dict[str, Any], dict[str, Any]]:
    """The hyperparameters and the model defaults (derive's) the command line gives."""
    given = {
        name: getattr(args, name)
        for name, *_ in _config_params(cls.CONFIG)
        if getattr(args, name) is not None
    }
    derive_defaults = {
        name: getattr(args, name)
        for name, *_ in _derive_params(cls, skip_config=True)
        if getattr(args, name, None) is not None
    }
    return given, derive_defaults


def _cmd_train(args: argparse.Namespace, beam_args: list[str]) -> int:
    from beam_ml.core.state import config_to_dict
    from beam_ml.io.checkpoints import read_manifest
    from beam_ml.transforms.train import train_cycle

    cls = args.state_class
    given, derive_defaults = _given_params(args, cls)
    if args.streaming:
        return _train_continuously(args, beam_args, given, derive_defaults)
    reader = None
    if _needs_feature_dim(cls) and "feature_dim" not in given and not args.resume:
        # A required feature_dim (factorization machines) that the input can tell.
        reader = _reader(args, None)
        if reader.n_features:
            given["feature_dim"] = reader.n_features
    config, derive_defaults = _train_config(cls, given, derive_defaults, args.resume, "--resume")
    if reader is None:
        reader = _reader(args, getattr(config, "feature_dim", None), _series_freq(cls, config))
    if getattr(config, "feature_dim", 0) is None and reader.n_features:
        config = dataclasses.replace(config, feature_dim=reader.n_features)
    resolve = getattr(cls, "resolve_auto", None)  # DeepAR: 'auto' cardinality ... from files
    if resolve is not None and hasattr(reader, "blocks_local") and not args.resume:
        config = resolve(config, reader.blocks_local())
    extra = {"derive_defaults": derive_defaults, "trained_on": args.input}
    if hasattr(reader, "end_offsets"):  # Kafka: where a next run starts (start=P:OFFSET,...)
        extra["source_positions"] = {f"{t}:{p}": o for (t, p), o in reader.end_offsets.items()}

    started = time.time()
    p, _ = _pipeline(beam_args)
    blocks, _ = _read_blocks(p, args, args.output, reader)
    positions = None
    if hasattr(reader, "positions_read"):  # Kinesis: the sequence numbers the read reached
        from beam_ml.io.kinesis import LatestPositions

        positions = reader.positions_read | LatestPositions(reader.start_positions)
    train_cycle(blocks, config, args.output, extra, resume_from=args.resume, positions=positions)
    result = _run(p)
    seconds = time.time() - started
    rows = _report_reading(result, args, seconds)
    if rows == 0 and not args.resume:
        raise UsageError(f"no rows were read from --input {args.input!r}; nothing was written")
    manifest = read_manifest(args.output)
    _emit(
        _json(
            {
                "algorithm": cls.FAMILY,
                "output": args.output,
                "n_seen": manifest["n_seen"],
                "rows_read": rows,
                "seconds": round(seconds, 2),
                "config": config_to_dict(config),
                # Per-epoch metrics, for the states that keep them (linear_learner).
                **{k: v for k, v in manifest["meta"].items() if k == "epoch_metrics"},
            }
        )
    )
    return 0


def _derive_args(args: argparse.Namespace, cls: type, defaults: dict[str, Any]) -> dict[str, Any]:
    params = dict(defaults)
    params.update(
        {
            name: getattr(args, name)
            for name, *_ in _derive_params(cls)
            if getattr(args, name, None) is not None
        }
    )
    return params


def _cmd_derive(args: argparse.Namespace, beam_args: list[str]) -> int:
    from beam_ml.io.checkpoints import read_checkpoint, write_checkpoint

    state, manifest = read_checkpoint(args.state_dir, "state")
    params = _derive_args(args, type(state), manifest.get("extra", {}).get("derive_defaults", {}))
    model = state.derive(**params)
    write_checkpoint(args.output, model, {"derived_from": args.state_dir, "params": params})
    _emit(
        _json(
            {"algorithm": state.FAMILY, "output": args.output, "params": params, **model.describe()}
        )
    )
    return 0


def _load_model(path: str) -> Any:
    from beam_ml.transforms.models import model_at  # cached: the local runner reuses it

    return model_at(path)


def _output_columns(model: Any) -> list[str]:
    """The names of the columns ``model.evaluate`` gives, for predict's header line."""
    family = model.FAMILY
    if family == "pca":
        return [f"projection_{i}" for i in range(model.components.shape[0])]
    if family == "kmeans":
        return ["cluster", "distance"]
    if family == "ntm":
        return [f"topic_weight_{k}" for k in range(model.num_topics)]
    predictor = getattr(model, "predictor_type", None)
    if predictor == "multiclass_classifier":
        return ["predicted_label", *(f"probability_{c}" for c in range(model.num_classes))]
    if predictor == "binary_classifier":  # the hinge loss gives a margin, no probability
        first = "score" if getattr(model, "loss", None) == "hinge_loss" else "probability"
        return [first, "predicted_label"]
    if predictor == "regressor":
        return ["score"]
    raise UsageError(f"predict does not know the output columns of a {family} model")


def _model_freq(model: Any) -> str | None:
    """A series model's frequency (its input's); None for a model of matrix rows."""
    from beam_ml.core.series import SeriesSpec

    spec = model.input_spec
    return spec.freq if isinstance(spec, SeriesSpec) else None


def _forecast_request(args: argparse.Namespace, model: Any) -> dict[str, Any] | None:
    """A forecaster's inference configuration (SageMaker's ``num_samples``,
    ``output_types``, ``quantiles``), defaults from the model; None for other models."""
    asked = {k: getattr(args, k) for k in ("num_samples", "output_types", "quantiles")}
    if not hasattr(model, "sample_paths"):
        given = [f"--{k}" for k, v in asked.items() if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} apply to forecasts (deepar), not {model.FAMILY}")
        return None
    from beam_ml.io.sagemaker import OUTPUT_TYPES

    types = asked["output_types"] or ("mean", "quantiles")
    unknown = [t for t in types if t not in OUTPUT_TYPES] or ([] if types else [""])
    if unknown:
        raise UsageError(f"--output_types takes {', '.join(OUTPUT_TYPES)}; got {unknown[0]!r}")
    quantiles = asked["quantiles"] or model.config.test_quantiles
    if any(not 0 < q < 1 for q in quantiles):
        raise UsageError(f"--quantiles are quantiles in (0, 1); got {','.join(map(str, quantiles))}")  # fmt: skip
    samples = asked["num_samples"] or model.num_eval_samples
    if samples < 1:
        raise UsageError(f"--num_samples must be at least 1; got {samples}")
    return {"output_types": tuple(types), "quantiles": tuple(quantiles), "num_samples": samples}


def _forecast_columns(model: Any, request: dict[str, Any]) -> list[str]:
    from beam_ml.io.sagemaker import forecast_columns

    return forecast_columns(model.prediction_length, **request)


def _forecast(block: Any, path: str, request: dict[str, Any]) -> tuple[Any, Any]:
    """(origin, forecast rows) of a block of series, by the model at ``path``."""
    from beam_ml.io.sagemaker import forecast_outputs

    return block.origin, forecast_outputs(_load_model(path), block, **request)


def _cmd_predict(args: argparse.Namespace, beam_args: list[str]) -> int:
    import apache_beam as beam

    from beam_ml.io.pipes import ReadPipe
    from beam_ml.io.sinks import WriteRowsInOrder
    from beam_ml.io.sources import ReadBlocks
    from beam_ml.transforms import Predict

    model = _load_model(args.model_dir)
    freq = _model_freq(model)
    request = _forecast_request(args, model)
    reader = _reader(args, None if freq else model.n_features, freq)
    # Files and standard input give byte offsets, whose records are counted in the file
    # when some were set aside; Kafka, SQL and binary formats give record positions.
    text_format = None
    if isinstance(reader, ReadBlocks | ReadPipe) and formats.get(args._format).text:
        text_format = args._format
    sources = {"<stdin>": reader.spill_path} if isinstance(reader, ReadPipe) else {}
    started = time.time()
    p, _ = _pipeline(beam_args)
    blocks, dead = _read_blocks(p, args, args.output, reader)
    if args.query is not None or not formats.get(args._format).records_are_rows:
        dead = None  # a query's rows have no input lines (point records: series have none)
    # By path: workers read the model; it never travels inside the pipeline graph.
    columns = _output_columns(model) if request is None else _forecast_columns(model, request)
    header: str | None = ",".join(columns)
    row_format = None
    if args.output_format == "sagemaker":  # JSON lines in SageMaker's response shapes
        from beam_ml.io.sagemaker import row_formatter

        row_format = row_formatter(model.FAMILY, columns)
        header = None
    if request is None:
        outputs = blocks | Predict(args.model_dir, keep_origin=True)
    else:  # a forecaster: one line per series
        outputs = blocks | "Forecast" >> beam.Map(_forecast, args.model_dir, request)
    (
        outputs
        | WriteRowsInOrder(
            args.output,
            header=header,
            set_aside=dead,
            text_format=text_format,
            sources=sources,
            row_format=row_format,
        )
    )
    result = _run(p)
    _report_reading(result, args, time.time() - started)
    _emit(_json({"output": args.output}))
    return 0


def _with_dead_letters(metrics: dict[str, Any], n_dead: int, path: str) -> str:
    """The metrics line: ``n_dead_letters`` always, and where they are when there are
    any, so a script notices rows set aside; no NaN (not JSON)."""
    where = {"dead_letters": path} if n_dead else {}
    return _json({**metrics, "n_dead_letters": n_dead, **where}, sort_keys=True)


def _cmd_evaluate(args: argparse.Namespace, beam_args: list[str]) -> int:
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    from beam_ml.transforms import Evaluate

    model = _load_model(args.model_dir)
    freq = _model_freq(model)
    reader = _reader(args, None if freq else model.n_features, freq)
    started = time.time()
    # Without --output the metrics go through this command's temporary folder, removed on
    # every exit; the dead letters never do (default: ./evaluate.dead_letters.jsonl).
    p, scratch = _pipeline(beam_args, "eval")
    target = args.output or os.path.join(scratch, "metrics.json")
    blocks, dead = _read_blocks(p, args, args.output or "evaluate", reader)
    n_dead = (
        dead | "CountDeadLetters" >> beam.combiners.Count.Globally()
        if dead is not None
        else p | "NoDeadLetters" >> beam.Create([0])
    )
    path = args._dead_path
    (
        blocks
        | Evaluate(args.model_dir)
        | "MetricsJson"
        >> beam.Map(_with_dead_letters, n_dead=beam.pvalue.AsSingleton(n_dead), path=path)
        | beam.io.WriteToText(target, num_shards=1, shard_name_template="")
    )
    result = _run(p)
    _report_reading(result, args, time.time() - started)
    with FileSystems.open(target) as handle:
        _emit(handle.read().decode().strip())
    return 0


def _cmd_inspect(args: argparse.Namespace, beam_args: list[str]) -> int:
    from beam_ml.io.checkpoints import read_manifest

    _emit(_json(read_manifest(args.path), indent=2, sort_keys=True))
    return 0


# --- the parser ----------------------------------------------------------------------------
def _parser(argv: list[str]) -> argparse.ArgumentParser:
    from beam_ml.core.block import Block
    from beam_ml.core.state import families

    # Only train and derive have options per algorithm: the other commands' start does
    # not import every algorithm (loading a model imports what it needs).
    command = next((a for a in argv if not a.startswith("-")), None)
    algos = families() if command in ("train", "derive", "tune") else {}
    # Its readers emit matrix blocks, documents (the text formats: the vocabulary stage)
    # and series (the series formats).
    from beam_ml.core.series import SeriesBlock
    from beam_ml.io.formats.documents import DocumentBlock

    kinds = (Block, DocumentBlock, SeriesBlock)
    algos = {name: cls for name, cls in algos.items() if cls.BLOCK_KIND in kinds}
    parser = _Parser(
        prog="beam-ml",
        description="Train, derive, predict and evaluate streaming ML models on Apache Beam. "
        "Options a command does not know are passed to Beam as pipeline options "
        "(e.g. --runner FlinkRunner, or --direct_num_workers 2 --direct_running_mode multi_processing).",
        allow_abbrev=False,
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks")
    parser.add_argument("--quiet", action="store_true", help="no progress messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a state from data (one pass)",
        allow_abbrev=False,
        description="Train an algorithm's state in one pass and write it as a checkpoint.",
    )
    train_algos = train.add_subparsers(dest="algorithm", required=True, metavar="ALGORITHM")
    for family, cls in sorted(algos.items()):
        sub = train_algos.add_parser(
            family, help=(inspect.getdoc(cls) or "").splitlines()[0], allow_abbrev=False
        )
        sub.add_argument(
            "--output", required=True, help="checkpoint directory to write the state to"
        )
        sub.add_argument(
            "--resume", metavar="STATE_DIR", help="merge this checkpoint's state with the new data"
        )
        _add_reader_args(sub)
        _add_streaming_args(sub)
        _add_params(sub.add_argument_group("hyperparameters"), _config_params(cls.CONFIG))
        _add_params(
            sub.add_argument_group("model defaults (used by derive unless given there)"),
            _derive_params(cls, skip_config=True),
        )
        sub.set_defaults(state_class=cls, handler=_cmd_train)

    derive = commands.add_parser(
        "derive", help="derive a model from a state (no data read)", allow_abbrev=False
    )
    derive.add_argument("state_dir")
    derive.add_argument("--output", required=True, help="directory to write the model to")
    _add_derive_params(derive.add_argument_group("model parameters (by algorithm)"), algos)
    derive.set_defaults(handler=_cmd_derive)

    predict = commands.add_parser(
        "predict", help="write the model's output for every input row (CSV)", allow_abbrev=False
    )
    predict.add_argument("model_dir")
    predict.add_argument(
        "--output",
        required=True,
        help="CSV file to write: a header line naming the columns, then one line per "
        "input record, in input order; a record set aside (see --dead_letters) is an "
        "empty line",
    )
    _add_reader_args(predict)
    predict.add_argument(
        "--output_format",
        choices=("csv", "sagemaker"),
        default="csv",
        help="csv (default), or sagemaker: one JSON object per record in SageMaker's "
        "response shape ({score, predicted_label}, projection, closest_cluster ...), "
        "JSON lines",
    )
    forecasts = predict.add_argument_group("forecasts (deepar: one line per series)")
    forecasts.add_argument(
        "--num_samples",
        type=int,
        metavar="N",
        help="sample paths per series (default: the model's num_eval_samples)",
    )
    forecasts.add_argument(
        "--output_types",
        type=_listed(str),
        metavar="TYPES",
        help="comma-separated: mean, quantiles, samples (default: mean,quantiles); CSV "
        "columns mean_<t>, quantile_<q>_<t>, sample_<s>_<t>",
    )
    forecasts.add_argument(
        "--quantiles",
        type=_listed(float),
        metavar="QS",
        help="comma-separated quantiles (default: the model's test_quantiles)",
    )
    predict.set_defaults(handler=_cmd_predict)

    evaluate = commands.add_parser(
        "evaluate", help="print the model's metrics on data as JSON", allow_abbrev=False
    )
    evaluate.add_argument("model_dir")
    evaluate.add_argument("--output", help="also write the metrics JSON here")
    _add_reader_args(
        evaluate, "<output>.dead_letters.jsonl, or ./evaluate.dead_letters.jsonl without --output"
    )
    evaluate.set_defaults(handler=_cmd_evaluate)

    # tune reads its slices in memory as rows: series families are not offered yet
    _add_tune_parser(commands, {n: c for n, c in algos.items() if c.BLOCK_KIND is not SeriesBlock})

    show = commands.add_parser("inspect", help="print a checkpoint's manifest", allow_abbrev=False)
    show.add_argument("path")
    show.set_defaults(handler=_cmd_inspect)
    return parser


# --- tune (beam_ml.tuning) -------------------------------------------------------------------
def _add_tune_parser(commands: Any, algos: dict[str, type]) -> None:
    tune = commands.add_parser(
        "tune",
        help="choose hyperparameters: successive halving, or a derive grid (no retraining)",
        allow_abbrev=False,
        description="Train every configuration of --grid on a first slice of --input, "
        "keep the best by --metric on --validation, resume the survivors on more rows "
        "(as train --resume), and write the chosen model; model parameters (derive's: "
        "k, num_components, wd/l1 of the exact path, threshold criteria) are derived "
        "from one trained state without retraining.",
    )
    tune_algos = tune.add_subparsers(dest="algorithm", required=True, metavar="ALGORITHM")
    for family, cls in sorted(algos.items()):
        sub = tune_algos.add_parser(
            family, help=(inspect.getdoc(cls) or "").splitlines()[0], allow_abbrev=False
        )
        sub.add_argument(
            "--output",
            required=True,
            help="directory for the chosen model (<output>/model), the leaderboard "
            "(<output>/leaderboard.json) and the candidates' checkpoints",
        )
        group = sub.add_argument_group("tuning")
        group.add_argument(
            "--grid",
            required=True,
            help="NAME=V1,V2;NAME=V1,V2: hyperparameters or model parameters and their values",
        )
        group.add_argument(
            "--validation",
            required=True,
            help="file glob of the validation rows (read with the --input options)",
        )
        group.add_argument(
            "--metric", help="the validation metric ranked by (default: the family's loss)"
        )
        group.add_argument(
            "--budget",
            type=int,
            metavar="ROWS",
            help="rows the chosen configuration learns (default: all of --input)",
        )
        group.add_argument(
            "--eta",
            type=int,
            default=3,
            help="keep the best 1/eta at each rung, each rung eta times the rows of the "
            "last (default: 3; 1: train every configuration on the whole budget)",
        )
        _add_reader_args(sub)
        _add_params(sub.add_argument_group("hyperparameters"), _config_params(cls.CONFIG))
        _add_params(
            sub.add_argument_group("model defaults (used by derive unless in the grid)"),
            _derive_params(cls, skip_config=True),
        )
        sub.set_defaults(state_class=cls, handler=_cmd_tune)


def _read_in_memory(args: argparse.Namespace, path: str, feature_dim: int | None) -> Any:
    """Every row of the files at ``path`` as one block (read in this process), with the
    reading options of ``--input``; malformed records go to the dead letters."""
    from beam_ml.core.block import Block
    from beam_ml.io.sources import ReadBlocks, read_blocks_local

    service = "://" in path.split("?")[0] and not path.startswith(("gs://", "s3://"))
    if args.query is not None or path == "-" or service:
        raise UsageError(f"tune reads files (a glob, local, gs:// or s3://), not {path!r}")
    scoped = argparse.Namespace(**{**vars(args), "input": path})
    reader = _reader(scoped, feature_dim)  # resolves the format, checks the options
    assert isinstance(reader, ReadBlocks)
    dead: list[dict[str, Any]] = []
    label = args.label_column
    if label is not None and re.fullmatch(r"-?\d+", label):
        label = int(label)
    blocks = list(
        read_blocks_local(
            reader.files,
            scoped._format,
            label_column=label,
            header=args.header,
            delimiter=args.delimiter,
            feature_dim=reader.n_features,
            zero_based=args.zero_based,
            block_size=args.mini_batch_size or 10_000,
            strict=args.strict,
            dead_letters=None if args.strict else dead,
            max_bad_fraction=args.max_bad_fraction,
            categorical_columns=args.categorical_columns,
            missing=args.missing,
        )
    )
    if dead:
        _LOG.warning("%s: %s malformed records set aside", path, f"{len(dead):,}")
    if not blocks:
        raise UsageError(f"no rows were read from {path!r}")
    return Block.concat(blocks), reader.n_features


def _cmd_tune(args: argparse.Namespace, beam_args: list[str]) -> int:
    from beam_ml import tuning

    cls = args.state_class
    converters = {name: kind for name, kind, *_ in _config_params(cls.CONFIG)}
    converters.update({name: kind for name, kind, *_ in _derive_params(cls)})
    try:
        grid = tuning.parse_grid(args.grid, converters)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    base, derive_defaults = _given_params(args, cls)
    fixed = sorted(set(grid) & (set(base) | set(derive_defaults)))
    if fixed:
        raise UsageError(f"--grid and --{fixed[0]} both set {fixed[0]}: give it in one place")
    data, n_features = _read_in_memory(args, args.input, base.get("feature_dim"))
    validation, _ = _read_in_memory(args, args.validation, n_features)
    fields = {f.name for f in dataclasses.fields(cls.CONFIG)}
    if "feature_dim" in fields and "feature_dim" not in base and n_features:
        base["feature_dim"] = n_features
    missing = [
        f.name
        for f in dataclasses.fields(cls.CONFIG)
        if f.default is dataclasses.MISSING and f.name not in base and f.name not in grid
    ]
    if missing:
        raise UsageError(f"tune {cls.FAMILY} needs " + ", ".join(f"--{m}" for m in missing))
    if args.eta < 1:
        raise UsageError(f"--eta must be >= 1; got {args.eta}")
    started = time.time()
    result = tuning.tune(
        cls,
        base,
        grid,
        data,
        validation,
        args.output,
        metric=args.metric,
        budget=args.budget,
        eta=args.eta,
        derive_defaults=derive_defaults,
        block_rows=args.mini_batch_size or 10_000,
        pipeline_args=beam_args,
    )
    if _LOG.isEnabledFor(logging.INFO):
        print(tuning.leaderboard_table(result), file=sys.stderr)
    summary = {k: v for k, v in result.to_json().items() if k != "leaderboard"}
    summary["leaderboard"] = [
        {k: v for k, v in e.items() if k not in ("models", "config")} for e in result.leaderboard
    ]
    _emit(_json({**summary, "seconds": round(time.time() - started, 2)}))
    return 0


def _configure_logging(quiet: bool, debug: bool) -> None:
    """beam_ml's progress on stderr; Beam's own logs only with --debug (a failure is
    reported once, as one line, by main)."""
    logging.basicConfig(level=logging.ERROR, format="%(message)s", stream=sys.stderr)
    logging.getLogger("beam_ml").setLevel(logging.WARNING if quiet else logging.INFO)
    logging.getLogger("apache_beam").setLevel(logging.WARNING if debug else logging.CRITICAL)
    # The same levels in local multi-process workers (see beam_ml.core.worker): their
    # standard error is this command's.
    from beam_ml.core.worker import LOG_LEVELS_ENV

    os.environ[LOG_LEVELS_ENV] = (
        f"beam_ml={'WARNING' if quiet else 'INFO'},"
        f"apache_beam={'WARNING' if debug else 'CRITICAL'},=ERROR"
    )


def _one_line(exc: BaseException) -> str:
    """The message of the beam_ml error inside a (possibly worker-wrapped) exception."""
    text = str(exc)
    found = re.findall(
        r"(?:BadInputError|NotEnoughDataError|IncompatibleStateError|CorruptStateError|"
        r"CheckpointNotFoundError|ValueError|FileNotFoundError): ([^\n\[]+)",
        text,
    )
    if found:
        return found[-1].strip()
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


# `import apache_beam` loads the clients of two services that a local train, predict or
# evaluate never calls: Google Pub/Sub's (about 0.25 s) and MongoDB's (0.07 s), a fifth of
# Beam's import. Beam imports both inside `try: ... except ImportError`, so marking them
# absent skips them. Not done for another runner, nor for Pub/Sub input or --streaming.
_UNUSED_CLIENTS = ("google.cloud.pubsub", "pymongo")


def _skip_unused_clients(args: argparse.Namespace, beam_args: list[str]) -> None:
    if args.command not in ("train", "predict", "evaluate") or getattr(args, "streaming", False):
        return
    if any(a.startswith("--runner") for a in beam_args) or "://" in args.input.split("?")[0]:
        return  # another runner, or a service URL (pubsub://, kafka://, a database)
    for name in _UNUSED_CLIENTS:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]


_TERMINATED: list[int] = []  # the signal received, if any


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM ends the command as Ctrl-C does: temporary files are removed on the way out."""
    _TERMINATED.append(signum)
    raise SystemExit(128 + signum)


def _object_store_options(beam_args: list[str]) -> None:
    """Give Beam's filesystems the pipeline options (``--s3_endpoint_url``, credentials,
    ``--project`` ...) before any pipeline exists: inputs are matched, and checkpoints
    read and written (derive, inspect), outside one. Without options, Beam's S3
    filesystem refuses to start; with empty ones, boto3 takes its usual environment
    (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` ...)."""
    from apache_beam.io.filesystems import FileSystems

    from beam_ml.core.runner import pipeline_options

    FileSystems.set_options(pipeline_options(beam_args))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    _configure_logging("--quiet" in argv, debug)
    from beam_ml.core.errors import BeamMLError

    parser = _parser(argv)
    # --debug and --quiet are read above and welcome anywhere on the line.
    argv = [a for a in argv if a not in ("--debug", "--quiet")]
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # --streaming sets its own while it runs
    try:
        args, unknown = parser.parse_known_args(argv)
        _skip_unused_clients(args, unknown)
        beam_args = _beam_options(unknown)
        if any(re.match(r"^(s3|gs)://", str(a)) for a in argv):
            _object_store_options(beam_args)
        return args.handler(args, beam_args)
    except _OutputClosed:
        # The reader of the output left (`beam-ml inspect | head`): stop without a
        # message, as `cat` does (status 141, a SIGPIPE); the exit's flush of the
        # output must not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except UsageError as exc:
        print(f"beam-ml: error: {exc}", file=sys.stderr)
        return 2
    except (BeamMLError, ValueError, TypeError, OSError, RuntimeError) as exc:
        if _TERMINATED:  # raised inside a running pipeline, and wrapped by Beam
            return 128 + _TERMINATED[0]
        if debug:
            raise
        print(f"beam-ml: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        for folder in _TEMPORARY:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
