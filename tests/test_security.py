"""Security checks over the repository itself: no credentials committed, secrets only via a git-ignored
.env with a committed template, SQL never formatted from values, DAG params typed by JSON schema."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Shapes of real credentials (provider key formats and private keys), not the word "password".
SECRET_SHAPES = {
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key block": re.compile(r"-----BEGIN (RSA |EC |DSA |OPENSSH |PGP )?PRIVATE KEY( BLOCK)?-----"),
    "GitHub token": re.compile(r"\b(ghp|gho|ghs|ghu|github_pat)_[A-Za-z0-9_]{30,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
    "OpenAI/Anthropic key": re.compile(r"\bsk-(ant-)?[A-Za-z0-9_\-]{32,}\b"),
    "URL with inline password": re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s:/@'\"$]+:(?!\$\{)[^\s:/@'\"$]{6,}@"),
}
# ``secret = "literal"`` style assignments; env references and obvious placeholders are fine.
ASSIGNED_SECRET = re.compile(
    r"(?i)\b[\w.-]*(password|passwd|secret|token|api_?key|access_?key)[\w.-]*\b[\"']?\s*[:=]\s*[\"']?([^\s\"',}#]+)")
PLACEHOLDERS = re.compile(r"(?i)^(\$|\{|<|os\.|settings\.|none|null|true|false|change-?me|testing|test|dummy|example|"
                          r"xxx+|\*+|\.\.\.|str|bool|int|\)|\(|\[|getenv|environ)")


def tracked_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    return [REPO / p for p in out.decode().split("\0") if p]


def _text(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if b"\0" in data[:4096] or len(data) > 2_000_000:
        return None
    return data.decode("utf-8", errors="replace")


def secret_findings(paths: list[Path], root: Path = REPO) -> list[str]:
    """``file:line: kind`` for every credential-looking string in ``paths``."""
    found = []
    for path in paths:
        text = _text(path)
        if text is None:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            for kind, pattern in SECRET_SHAPES.items():
                if pattern.search(line):
                    found.append(f"{path.relative_to(root)}:{lineno}: {kind}")
            for match in ASSIGNED_SECRET.finditer(line):
                value = match.group(2)
                if len(value) >= 12 and not PLACEHOLDERS.match(value) and re.search(r"\d", value) \
                        and re.search(r"[A-Za-z]", value) and "(" not in value and "[" not in value:
                    found.append(f"{path.relative_to(root)}:{lineno}: literal {match.group(1)} value")
    return found


def test_no_credentials_in_tracked_files():
    assert secret_findings(tracked_files()) == []


def test_secret_scan_catches_planted_credentials(tmp_path):
    planted = tmp_path / "settings.yaml"
    # assembled at run time so this file itself stays clean for the repository scan
    planted.write_text("aws_key: " + "AKIA" + "IOSFODNN7EXAMPLE\n"
                       "db: postgresql://airflow:" + "hunter2pass@postgres/airflow\n"
                       "S3_SECRET_KEY=" + "wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY9\n"
                       "POSTGRES_PASSWORD=${POSTGRES_PASSWORD:?set in .env}\n"
                       "token: change-me\n")
    kinds = [f.split(": ", 1)[1] for f in secret_findings([planted], tmp_path)]
    assert kinds == ["AWS access key id", "URL with inline password", "literal SECRET value"]


def test_env_file_is_git_ignored_and_never_tracked():
    assert subprocess.run(["git", "check-ignore", "-q", ".env"], cwd=REPO).returncode == 0
    assert subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO).returncode == 0
    tracked = [p.name for p in tracked_files()]
    assert ".env" not in tracked


def _compose_files() -> list[Path]:
    return [p for p in tracked_files() if p.name in {"docker-compose.yaml", "docker-compose.yml", "compose.yaml"}]


def compose_problems(composes: list[Path], templates: list[Path]) -> list[str]:
    """Ways the compose files could leak or hard-code a secret instead of reading it from the .env template."""
    if not templates:
        return ["compose file present but no .env.example template committed"]
    problems = []
    defined = {line.split("=", 1)[0].strip() for t in templates for line in t.read_text().splitlines()
               if "=" in line and not line.lstrip().startswith("#")}
    for compose in composes:
        text = compose.read_text()
        required = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+):\?", text))
        referenced = set(re.findall(r"(?<!\$)\$\{([A-Z0-9_]+)", text))  # $${X} is a container-side shell variable
        if not required:
            problems.append(f"{compose.name} requires no variables from .env")
        problems += [f"{v} is required by {compose.name} but missing from .env.example"
                     for v in sorted(required - defined)]
        problems += [f"{v} has a default in {compose.name}; secrets must be required from .env"
                     for v in sorted(referenced - required) if re.search(r"PASSWORD|SECRET|KEY|TOKEN", v)]
        for line in text.splitlines():
            key = re.match(r"\s*-?\s*([A-Z0-9_]*(PASSWORD|SECRET|FERNET_KEY|ACCESS_KEY)[A-Z0-9_]*)\s*[:=]\s*(.+)", line)
            if key and "${" not in key.group(3) and "/run/secrets" not in key.group(3) and "_FILE" not in key.group(1):
                problems.append(f"{compose.name}: {key.group(1)} is set to a literal")
    for template in templates:  # the template holds placeholders only
        for line in template.read_text().splitlines():
            name, _, value = line.partition("=")
            if value and not line.lstrip().startswith("#") and re.search(r"PASSWORD|SECRET|FERNET|JWT", name) \
                    and not value.strip().startswith("change-me"):
                problems.append(f"{template.name}: {name.strip()} holds a value, not a change-me placeholder")
    return problems


def test_compose_reads_secrets_from_env_template():
    composes = [p for p in tracked_files() if p.name in {"docker-compose.yaml", "docker-compose.yml", "compose.yaml"}]
    if not composes:
        pytest.skip("no compose file in this checkout")
    assert compose_problems(composes, [p for p in tracked_files() if p.name == ".env.example"]) == []


def test_compose_check_catches_hard_coded_secret(tmp_path):
    compose = tmp_path / "docker-compose.yaml"
    compose.write_text("services:\n  db:\n    environment:\n      POSTGRES_USER: ${POSTGRES_USER:?set}\n"
                       "      POSTGRES_PASSWORD: airflow\n      MINIO_ROOT_PASSWORD: ${S3_SECRET_KEY:-minioadmin}\n")
    template = tmp_path / ".env.example"
    template.write_text("POSTGRES_USER=airflow\nAIRFLOW_JWT_SECRET=abc123\n")
    assert compose_problems([compose], [template]) == [
        "S3_SECRET_KEY has a default in docker-compose.yaml; secrets must be required from .env",
        "docker-compose.yaml: POSTGRES_PASSWORD is set to a literal",
        ".env.example: AIRFLOW_JWT_SECRET holds a value, not a change-me placeholder",
    ]


# ----- DAG params -----
# A value of each JSON type, with the schema types that accept it: the first one a param's types reject is
# used to prove the param validates its input.
WRONG_VALUES = [("not-a-number", {"string"}), (12345, {"integer", "number"}), ([1], {"array"}),
                ({"a": 1}, {"object"}), (True, {"boolean"})]


def dag_param_problems(dag_folder: Path) -> tuple[int, list[str]]:
    """(params checked, problems): every DAG param must declare a JSON-schema type and a description, and
    a value of the wrong type must be refused by the param itself (what the trigger form and dag.test use)."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk.exceptions import ParamValidationError

    bag = DagBag(str(dag_folder), safe_mode=False)
    problems = [f"{path}: import error {err.splitlines()[-1] if err else ''}"
                for path, err in bag.import_errors.items()]
    checked = 0
    for dag_id, dag in sorted(bag.dags.items()):
        for name in dag.params:
            param = dag.params.get_param(name)
            checked += 1
            types = param.schema.get("type")
            if not types:
                problems.append(f"{dag_id}.{name}: no JSON-schema type")
                continue
            if not param.description:
                problems.append(f"{dag_id}.{name}: no description")
            typed = {t for t in (types if isinstance(types, list) else [types]) if t != "null"}
            wrong = next((v for v, kinds in WRONG_VALUES if not kinds & typed), None)
            if wrong is None:
                continue
            try:
                param.resolve(wrong)
                problems.append(f"{dag_id}.{name}: accepts {wrong!r} although typed {types}")
            except ParamValidationError:
                pass
    return checked, problems


def test_dag_params_are_typed_and_validated():
    if not (REPO / "dags").is_dir() or not list((REPO / "dags").glob("*.py")):
        pytest.skip("no DAGs in this checkout")
    checked, problems = dag_param_problems(REPO / "dags")
    assert problems == []
    assert checked > 0


def test_dag_param_check_catches_untyped_param(tmp_path):
    (tmp_path / "loose_dag.py").write_text(
        "from airflow.sdk import dag, task, Param\n"
        "@dag(dag_id='loose', schedule=None, params={'k': Param(5, type='integer', description='k'),\n"
        "     'free': Param('x'), 'n': 3})\n"
        "def loose():\n"
        "    @task\n"
        "    def t():\n"
        "        pass\n"
        "    t()\n"
        "loose()\n")
    checked, problems = dag_param_problems(tmp_path)
    assert checked == 3
    assert problems == ["loose.free: no JSON-schema type", "loose.n: no JSON-schema type"]


# ----- SQL built from values -----
SQL_CALLS = {"execute", "executemany", "sql", "query", "materialize", "from_query"}
SQL_WORDS = re.compile(r"\b(SELECT|INSERT INTO|UPDATE|DELETE FROM|CREATE|DROP|WHERE|FROM|JOIN)\b")
# Interpolations that are safe by construction: identifiers validated against ^[A-Za-z_][A-Za-z0-9_]*$,
# or SQL text the package itself ships (sql/*.sql). Anything else interpolated into SQL is a finding.
SAFE_WRAPPERS = {"_check_name"}
TRUSTED_SQL_TEXT = {"self._text(sql)"}


def _dynamic_parts(node: ast.AST) -> tuple[list[str], list[ast.expr]] | None:
    """(literal parts, interpolated expressions) of a string built at run time, else None."""
    if isinstance(node, ast.JoinedStr):
        lits = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
        exprs = [v.value for v in node.values if isinstance(v, ast.FormattedValue)]
        return (lits, exprs) if exprs else None
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mod)):
        sides = [node.left, node.right]
        lits = [s.value for s in sides if isinstance(s, ast.Constant) and isinstance(s.value, str)]
        if lits:
            return lits, [s for s in sides if not isinstance(s, ast.Constant)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format" \
            and isinstance(node.func.value, ast.Constant) and isinstance(node.func.value.value, str):
        return [node.func.value.value], list(node.args) + [k.value for k in node.keywords]
    return None


def _unsafe(expr: ast.expr) -> bool:
    if isinstance(expr, ast.Call) and isinstance(expr.func, ast.Name) and expr.func.id in SAFE_WRAPPERS:
        return False
    return ast.unparse(expr) not in TRUSTED_SQL_TEXT


def sql_injection_findings(files: list[Path], root: Path = REPO) -> list[str]:
    """``file:line: expr`` for each value formatted into SQL text (outside the safe wrappers)."""
    found = []
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        candidates: list[ast.AST] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
                candidates += node.args[:2]
            parts = _dynamic_parts(node)
            if parts and any(SQL_WORDS.search(lit) for lit in parts[0]):
                candidates.append(node)
        for node in candidates:
            parts = _dynamic_parts(node)
            for expr in (parts[1] if parts else []):
                if _unsafe(expr):
                    found.append(f"{path.relative_to(root)}:{node.lineno}: {ast.unparse(expr)}")
    return sorted(set(found))


def test_no_sql_built_from_values():
    files = sorted((REPO / "src").rglob("*.py"))
    assert files
    assert sql_injection_findings(files) == []


def test_sql_check_catches_formatted_values(tmp_path):
    code = tmp_path / "bad.py"
    code.write_text(
        "def f(con, user, name, sql):\n"
        "    con.execute(f\"SELECT * FROM events WHERE user_id = {user}\")\n"
        "    con.execute(\"DELETE FROM t WHERE k = '%s'\" % user)\n"
        "    q = 'SELECT * FROM {}'.format(name)\n"
        "    con.sql('select 1 where x = ' + user)\n"
        "    con.execute(f\"CREATE TABLE {_check_name(name)} AS SELECT 1\")\n"
        "    con.execute('SELECT * FROM events WHERE user_id = $u', {'u': user})\n"
        "    raise ValueError(f'no rows from {name}')\n")
    assert sql_injection_findings([code], tmp_path) == ["bad.py:2: user", "bad.py:3: user", "bad.py:4: name",
                                                        "bad.py:5: user"]
