"""ODBC connection strings: one parser, used to change a string (the `master` switch), to name its target
and to take its secrets out of any message.

Why a parser of our own: a connection string is a secret (it holds the password) that the operator must
still read (which driver, which database), change (`DATABASE=master` for a SQL Server restore) and keep
out of every error. Splitting on `;` gets all three wrong as soon as a value is braced (`PWD={a;b}`, with
`}}` for a `}`), a key is written in another case or spaces surround `=` and `;`. The grammar is ODBC's
(SQLDriverConnect): `key=value` attributes separated by `;`, keys case-insensitive, a value either plain
(trimmed, up to the next `;`) or in braces. The first occurrence of a key is the one drivers use.

Nothing here ever shows a value but the driver's name: `repr` and `str` of an `OdbcString` list its keys,
and `ConnectionStringError` names the attribute by its position or key, never by its text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# Values taken out of messages: the credentials and where the database lives.
SECRET_KEYS = frozenset({"PWD", "PASSWORD", "UID", "USER", "USERNAME", "USERID", "USER ID",
                         "SERVER", "ADDRESS", "ADDR", "SERVERNAME", "HOST", "HOSTNAME", "NETWORK ADDRESS"})
_SECRET_WORDS = ("PWD", "PASS", "SECRET", "TOKEN", "KEY")  # any other key that sounds like a credential
_SERVER_KEYS = ("SERVER", "ADDRESS", "ADDR", "SERVERNAME", "HOST", "HOSTNAME", "NETWORK ADDRESS", "DATA SOURCE")
_DATABASE_KEYS = ("DATABASE", "INITIAL CATALOG", "DBNAME")
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9 _.-]{0,63}$")
_PASSWORD_IN_TEXT = re.compile(r"(?i)\b(pwd|password)\s*=\s*(\{(?:[^}]|\}\})*\}?|[^;\s]*)")
_DEFAULT_PORTS = (("postgres", "5432"), ("sql server", "1433"), ("freetds", "1433"), ("tds", "1433"))
REDACTED = "***"


class ConnectionStringError(ValueError):
    """The connection string cannot be read; the message says where, never what the text was."""


@dataclass(frozen=True)
class Attribute:
    key: str            # as written (trimmed); compare with `name`
    value: str          # unescaped
    start: int          # the attribute's span in the original text, `;` excluded
    end: int

    @property
    def name(self) -> str:
        return self.key.upper()


@dataclass(frozen=True)
class Target:
    """Where a connection string leads: host, port and database, never the credentials. Two strings
    with equal targets reach the same database (other credentials, options or spelling aside)."""

    host: str
    port: str | None
    database: str | None

    def __str__(self) -> str:
        return f"{self.host}:{self.port or '?'}/{self.database or '?'}"


def _name_of(key: str, position: int) -> str:
    """How an error names an attribute: its key if it looks like one, else its position (a malformed
    string may have a password where a key should be)."""
    return key.upper() if _KEY.match(key) else f"attribute {position}"


def _read_braced(text: str, start: int, key: str, position: int) -> tuple[str, int]:
    """The value of a `{...}` starting at ``start`` (on the `{`) and the index after its `}`."""
    out, i = [], start + 1
    while i < len(text):
        ch = text[i]
        if ch == "}":
            if text.startswith("}}", i):
                out.append("}")
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise ConnectionStringError(f"the value of {_name_of(key, position)} opens '{{' and never closes it")


def _attributes(text: str) -> tuple[Attribute, ...]:
    found: list[Attribute] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] in " \t\r\n;":
            i += 1
            continue
        start, position = i, len(found) + 1
        eq, semi = text.find("=", i), text.find(";", i)
        if eq == -1 or (semi != -1 and semi < eq):
            raise ConnectionStringError(f"attribute {position} has no '=' (attributes are key=value, separated by ';')")
        key = text[i:eq].strip()
        if not _KEY.match(key):
            raise ConnectionStringError(f"attribute {position} has no valid key before '='")
        j = eq + 1
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == "{":
            value, j = _read_braced(text, j, key, position)
            end = j
            while j < n and text[j] in " \t\r\n":
                j += 1
            if j < n and text[j] != ";":
                raise ConnectionStringError(f"unexpected text after the braced value of {_name_of(key, position)}")
        else:
            stop = text.find(";", j)
            stop = n if stop == -1 else stop
            value, end, j = text[j:stop].strip(), stop, stop
        found.append(Attribute(key, value, start, end))
        i = j
    return tuple(found)


def _is_secret(name: str) -> bool:
    return name in SECRET_KEYS or any(word in name for word in _SECRET_WORDS)


def quote_value(value: str) -> str:
    """A value as it may be written in a connection string (braced when it must be)."""
    if value == value.strip() and not any(ch in value for ch in ";{}=") and "\n" not in value:
        return value
    return "{" + value.replace("}", "}}") + "}"


@dataclass(frozen=True, repr=False)
class OdbcString:
    """A parsed ODBC connection string. `text` is what a driver gets; nothing else shows a value."""

    text: str = field(compare=True)
    attributes: tuple[Attribute, ...] = field(compare=False)

    @classmethod
    def parse(cls, text: str) -> OdbcString:
        if not isinstance(text, str):
            raise ConnectionStringError(f"a connection string is text, not {type(text).__name__}")
        if "\x00" in text:
            raise ConnectionStringError("the connection string contains a NUL character")
        attributes = _attributes(text)
        if not attributes:
            raise ConnectionStringError("the connection string is empty")
        return cls(text, attributes)

    def get(self, key: str) -> str | None:
        """The value of ``key`` (any case), the first occurrence as drivers read it."""
        wanted = key.upper()
        return next((a.value for a in self.attributes if a.name == wanted), None)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    @property
    def driver(self) -> str | None:
        return self.get("DRIVER")

    def with_value(self, key: str, value: str) -> OdbcString:
        """The same string with ``key`` set to ``value``: every occurrence replaced in place (the rest
        of the text is left exactly as it was), or appended when absent."""
        wanted, written = key.upper(), f"{key}={quote_value(value)}"
        spans = [a for a in self.attributes if a.name == wanted]
        if not spans:
            return OdbcString.parse(self.text.rstrip().rstrip(";") + ";" + written)
        text = self.text
        for attr in reversed(spans):
            text = text[:attr.start] + written + text[attr.end:]
        return OdbcString.parse(text)

    def secrets(self) -> list[str]:
        """The values to take out of messages: credentials and server names, each in every form a
        driver may print it (as given, as written in the string, escaped)."""
        values: set[str] = set()
        for attr in self.attributes:
            if not _is_secret(attr.name) or not attr.value:
                continue
            value = attr.value
            values |= {value, value.strip(), value.replace("}", "}}"), "{" + value.replace("}", "}}") + "}",
                       value.encode("unicode_escape").decode("ascii"), repr(value)[1:-1]}
            if attr.name in _SERVER_KEYS:
                host, _, port = _strip_protocol(value).partition(",")
                values |= {host.strip(), f"{host.strip()}:{port.strip()}" if port else host.strip()}
        values.add(self.text)
        return sorted((v for v in values if v), key=len, reverse=True)

    def redact(self, message: str) -> str:
        """``message`` without any credential or server name of this string, whatever its length or
        characters: every occurrence that stands on its own (a value that starts or ends with a letter or
        digit is not taken out of the middle of a longer word: user `uwm` leaves `uwm_schema_lock` legible)."""
        out = message
        for value in self.secrets():
            before = r"(?<!\w)" if re.match(r"\w", value[0]) else ""
            after = r"(?!\w)" if re.match(r"\w", value[-1]) else ""
            out = re.sub(before + re.escape(value) + after, REDACTED, out, flags=re.IGNORECASE)
        return _PASSWORD_IN_TEXT.sub(lambda m: f"{m.group(1)}={REDACTED}", out)

    def target(self) -> Target:
        """The SERVER (host and port; PORT, or the default port of the driver) and DATABASE."""
        server = next((self.get(k) for k in _SERVER_KEYS if self.get(k)), None) or ""
        host, _, written_port = _strip_protocol(server).partition(",")
        host = host.strip().lower().rstrip(".")
        port = written_port.strip() or (self.get("PORT") or "").strip() or self._default_port(host)
        database = next((v for v in ((self.get(k) or "").strip() for k in _DATABASE_KEYS) if v), None)
        return Target(host, port or None, database)

    def _default_port(self, host: str) -> str | None:
        if "\\" in host:  # a SQL Server named instance: its port is the SQL Browser's to tell
            return None
        driver = (self.driver or "").lower()
        return next((port for word, port in _DEFAULT_PORTS if word in driver), None)

    def __repr__(self) -> str:
        return f"OdbcString(driver={self.driver!r}, keys={list(self.keys)})"

    __str__ = __repr__


def _strip_protocol(server: str) -> str:
    """SQL Server's `tcp:host,port` (or `np:`, `lpc:`) without the protocol prefix."""
    return re.sub(r"(?i)^\s*(tcp|np|lpc|admin)\s*:", "", server)


def parse(text: str) -> OdbcString:
    return OdbcString.parse(text)


def target(connection_string: str) -> Target:
    """Where ``connection_string`` leads (no credentials): for the overlap check and the approval hash."""
    return OdbcString.parse(connection_string).target()


def redact(message: str, connection_string: str) -> str:
    """``message`` without the credentials and server names of ``connection_string``; a string that
    cannot be parsed is taken out whole, with anything that looks like a password."""
    try:
        return OdbcString.parse(connection_string).redact(message)
    except ConnectionStringError:
        out = message.replace(connection_string, REDACTED) if connection_string else message
        return _PASSWORD_IN_TEXT.sub(lambda m: f"{m.group(1)}={REDACTED}", out)
