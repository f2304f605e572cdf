"""Bad input on real Spark + Delta: one-line error naming the file/column/row, exit 2,
and no new version of a table that already holds good data. Hostile but valid input
(SQL-looking text, quotes, newlines, 100 KB fields, odd column names) survives as data."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import yaml

from em_spark.cli import main
from em_spark.config import load_config
from em_spark.errors import EmError, InputError
from em_spark.ingest import check_utf8, check_utf8_spark, run_ingest
from em_spark.runs import Run
from em_spark.tables import Lakehouse, new_run_id
from tests.conftest import TEST_SPARK_CONF

GOOD_LEFT = "id,name,city\n1,alpha,paris\n2,beta,rome\n3,gamma,oslo\n"
GOOD_RIGHT = "id,name,city\n10,alpha,paris\n20,beta,rome\n"
GOOD_PAIRS = "ltable_id,rtable_id,label\n1,10,1\n2,10,0\n"


def write_config(folder: Path, root: Path, left: Path, right: Path | None, labels: Path | None, **extra) -> Path:
    cfg = {
        "lakehouse": {"root": str(root)},
        "spark": {"master": "local[2]", "conf": TEST_SPARK_CONF},
        "mode": "link" if right is not None else "dedupe",
        "ingest": {"left": {"path": str(left)}},
    }
    if right is not None:
        cfg["ingest"]["right"] = {"path": str(right)}
    if labels is not None:
        cfg["ingest"]["labels"] = [{"path": str(labels), "split": "train"}]
    for section, values in extra.items():
        cfg.setdefault(section, {})
        if isinstance(values, dict):
            cfg[section] = {**cfg[section], **values}
        else:
            cfg[section] = values
    path = folder / "em.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def write_inputs(folder: Path, left: bytes | str, right: bytes | str | None, pairs: bytes | str | None):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, content in (("left.csv", left), ("right.csv", right), ("pairs.csv", pairs)):
        if content is None:
            paths.append(None)
            continue
        p = folder / name
        p.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def good_lake(spark, tmp_path_factory):
    """A lakehouse that already holds good records and labels (version 0 of each)."""
    folder = tmp_path_factory.mktemp("good")
    root = folder / "lakehouse"
    left, right, pairs = write_inputs(folder, GOOD_LEFT, GOOD_RIGHT, GOOD_PAIRS)
    cfg = write_config(folder, root, left, right, pairs)
    assert main(["ingest", "--config", str(cfg)]) == 0
    lake = Lakehouse.from_config(spark, load_config(cfg))
    return folder, root, lake, (lake.version("records"), lake.version("labels"))


# (case id, left, right, pairs, extra config, what the one-line error must contain)
BAD_INPUTS = [
    ("right_truncated_utf8", GOOD_LEFT, b"id,name,city\n10,alpha,paris\n20,beta,r\xc3", GOOD_PAIRS, {},
     ["right.csv", "invalid UTF-8 at line 3"]),
    ("pairs_invalid_utf8", GOOD_LEFT, GOOD_RIGHT, b"ltable_id,rtable_id,label\n1,10,1\n\xff\xfe,10,0\n", {},
     ["pairs.csv", "invalid UTF-8 at line 3"]),
    ("duplicated_id", GOOD_LEFT + "2,again,rome\n", GOOD_RIGHT, GOOD_PAIRS, {},
     ["left.csv", "column 'id'", "duplicated id '2'"]),
    ("duplicated_id_after_trim", GOOD_LEFT + " 3 ,again,rome\n", GOOD_RIGHT, GOOD_PAIRS, {},
     ["left.csv", "duplicated id '3'"]),
    ("null_id", GOOD_LEFT + ",nobody,rome\n", GOOD_RIGHT, GOOD_PAIRS, {},
     ["left.csv", "column 'id'", "null or empty ids"]),
    ("missing_id_column", GOOD_LEFT, "key,name,city\n10,alpha,paris\n", GOOD_PAIRS, {},
     ["right.csv", "id column 'id' not found"]),
    ("empty_right", GOOD_LEFT, "id,name,city\n", GOOD_PAIRS, {}, ["right.csv", "empty"]),
    ("columns_differ", GOOD_LEFT, "id,title,city\n10,alpha,paris\n", GOOD_PAIRS, {},
     ["right.csv", "columns differ", "only left: ['name']", "only right: ['title']"]),
    ("config_attribute_missing", GOOD_LEFT, GOOD_RIGHT, GOOD_PAIRS, {"attributes": ["name", "zip"]},
     ["left.csv", "attribute 'zip'"]),
    ("label_not_binary", GOOD_LEFT, GOOD_RIGHT, GOOD_PAIRS + "3,20,2\n", {},
     ["pairs.csv", "column 'label'", "got '2'", "(3, 20)"]),
    ("label_empty", GOOD_LEFT, GOOD_RIGHT, GOOD_PAIRS + "3,20,\n", {},
     ["pairs.csv", "column 'label'", "got None"]),
    ("label_unknown_right_id", GOOD_LEFT, GOOD_RIGHT, GOOD_PAIRS + "3,99,1\n", {},
     ["pairs.csv", "column 'rtable_id'", "unknown right id '99'"]),
    ("label_column_missing", GOOD_LEFT, GOOD_RIGHT, "ltable_id,rtable_id,gold\n1,10,1\n", {},
     ["pairs.csv", "column 'label' not found"]),
    ("line_break_in_column_name", 'id,"na\nme",city\n1,alpha,paris\n', GOOD_RIGHT, GOOD_PAIRS, {},
     ["left.csv", "column name 'na\\nme' contains a line break"]),
    ("malformed_row", GOOD_LEFT + "4,delta,oslo,EXTRA\n", GOOD_RIGHT, GOOD_PAIRS, {},
     ["left.csv", "malformed CSV record", "4,delta,oslo,EXTRA"]),
]


def _run_ingest_directly(lake: Lakehouse, cfg: Path) -> None:
    """The ingest stage without the CLI and runs-table writes (the CLI path is tested once below)."""
    config = load_config(cfg)
    run = Run(run_id=new_run_id(), job="ingest", config_json="{}", started_at=datetime.now())
    run_ingest(lake, config, run)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_one_line_error_and_no_new_version(good_lake, case):
    name, left, right, pairs, extra, expected = case
    folder, root, lake, versions = good_lake
    paths = write_inputs(folder / name, left, right, pairs)
    cfg = write_config(folder / name, root, *paths, **extra)
    with pytest.raises(EmError) as caught:
        _run_ingest_directly(lake, cfg)
    message = str(caught.value)
    assert "\n" not in message
    for fragment in expected:
        assert fragment in message, message
    assert (lake.version("records"), lake.version("labels")) == versions


def test_cli_bad_input_exits_2_with_one_line_and_records_the_failed_run(good_lake, capsys):
    folder, root, lake, versions = good_lake
    paths = write_inputs(folder / "cli", "id,name,city\n1,alpha,paris\n2,caf\xe9,rome\n".encode("latin-1"), GOOD_RIGHT, GOOD_PAIRS)
    cfg = write_config(folder / "cli", root, *paths)
    code = main(["ingest", "--config", str(cfg)])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("em-spark ingest: error: ")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and "left.csv: invalid UTF-8 at line 3" in lines[0], err[-2000:]
    assert (lake.version("records"), lake.version("labels")) == versions
    (failed,) = lake.read("runs").where("job = 'ingest' AND status = 'failed'").collect()
    assert "invalid UTF-8 at line 3" in failed.error and failed.ended_at is not None


def test_config_naming_missing_file_or_table(good_lake, capsys):
    folder, root, lake, versions = good_lake
    left, right, _ = write_inputs(folder / "missing", GOOD_LEFT, GOOD_RIGHT, None)
    cfg = write_config(folder / "missing", root, left, folder / "missing" / "nope.csv", None)
    assert main(["ingest", "--config", str(cfg)]) == 2
    assert f"input not found: {folder / 'missing' / 'nope.csv'}" in capsys.readouterr().err
    cfg = write_config(
        folder / "missing", root, left, None, None,
        ingest={"left": {"path": "no_such_schema.no_such_table", "format": "table"}},
    )
    assert main(["ingest", "--config", str(cfg)]) == 2
    assert "table not found: no_such_schema.no_such_table" in capsys.readouterr().err
    assert (lake.version("records"), lake.version("labels")) == versions


def test_utf8_check_accepts_encoded_replacement_char_and_names_folder_file(tmp_path):
    # WDC data carries U+FFFD encoded as valid UTF-8 (EF BF BD): that is data, not an error.
    (tmp_path / "ok.csv").write_bytes("id,name\n1,bad \ufffd char, caf\u00e9 \U0001f600\n".encode())
    check_utf8(tmp_path / "ok.csv")
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "_SUCCESS").write_bytes(b"\xff")  # Spark skips _ and . files, so do we
    (folder / "part-0.csv").write_bytes(b"id,name\n1,a\n")
    (folder / "part-1.csv").write_bytes(b"id,name\n2,b\n3,\xc3\x28\n")
    with pytest.raises(InputError, match=r"part-1\.csv: invalid UTF-8 at line 3 \(byte 14\)"):
        check_utf8(folder)
    # A multi-byte sequence split across read chunks is valid, not an error.
    (tmp_path / "split.csv").write_bytes(("x" * 5 + "\u00e9\U0001f600" * 3).encode())
    check_utf8(tmp_path / "split.csv", chunk_bytes=3)


def test_utf8_check_through_spark_for_remote_paths(spark, tmp_path):
    """Paths with a scheme (s3://, abfss://, dbfs:/) are checked by Spark; file:// runs the
    same code here."""
    folder = tmp_path / "remote"
    folder.mkdir()
    (folder / "ok.csv").write_bytes("id,name\n1,caf\u00e9 \ufffd\n".encode())
    check_utf8_spark(spark, f"file://{folder / 'ok.csv'}")
    (folder / "bad.csv").write_bytes(b"id,name\n1,a\n2,b \xc3\x28 c\n")
    with pytest.raises(InputError, match=r"remote/bad\.csv: invalid UTF-8 in the line b'2,b \\xc3\(") as caught:
        check_utf8_spark(spark, f"file://{folder}")
    assert "\n" not in str(caught.value)


def test_hostile_but_valid_values_survive_ingest(spark, tmp_path):
    """SQL-looking ids and values, quotes, newlines, a 100 KB field, odd column names; the
    right table's differing columns are aligned by config (id_column, rename)."""
    big = "word " * 20_000  # 100,000 characters
    sql_id = "1'; DROP TABLE records; --"
    left = (
        'id,"na`me",a.b,desc\n'
        f'"{sql_id}","x"" OR 1=1 --","<script>alert(1)</script>","line one\nline two"\n'
        f'2,"Robert\'); DELETE FROM labels;--",plain,"{big}"\n'
    )
    right = 'key,NAME,a.b,desc\n"r`1",name,"${jndi:ldap://x}","it\'s ""quoted"""\n'
    pairs = f'ltable_id,rtable_id,label\n"{sql_id}",r`1,0\n'
    lp, rp, pp = write_inputs(tmp_path, left, right, pairs)
    cfg = write_config(tmp_path, tmp_path / "lakehouse", lp, rp, pp)
    cfg_data = yaml.safe_load(cfg.read_text())
    cfg_data["ingest"]["right"].update({"id_column": "key", "rename": {"NAME": "na`me"}})
    cfg.write_text(yaml.safe_dump(cfg_data))
    assert main(["ingest", "--config", str(cfg)]) == 0
    lake = Lakehouse.from_config(spark, load_config(cfg))
    rows = {(r.source, r.record_id): r.attributes for r in lake.read("records").collect()}
    assert set(rows) == {("left", sql_id), ("left", "2"), ("right", "r`1")}
    assert rows[("left", sql_id)] == {
        "na`me": 'x" OR 1=1 --', "a.b": "<script>alert(1)</script>", "desc": "line one\nline two"
    }
    assert rows[("left", "2")]["desc"] == big and len(big) == 100_000
    assert rows[("left", "2")]["na`me"] == "Robert'); DELETE FROM labels;--"
    assert rows[("right", "r`1")] == {"na`me": "name", "a.b": "${jndi:ldap://x}", "desc": 'it\'s "quoted"'}
    (label,) = lake.read("labels").collect()
    assert (label.left_id, label.right_id, label.label) == (sql_id, "r`1", 0)
