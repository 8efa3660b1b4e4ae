"""The one exception type users see: a message that names the problem and the fix."""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class ConvbenchError(Exception):
    """A user-facing failure: the CLI prints its message on one line and exits non-zero."""

    exit_code = 1


class ParamsError(ConvbenchError):
    """params.yaml is missing, unreadable or invalid; exit code 2 like any usage error."""

    exit_code = 2


class DataError(ConvbenchError):
    """A dataset's files are missing, unreadable or fail their checksum."""


class TrainingDiverged(ConvbenchError):
    """The training loss became non-finite: the recipe (usually its learning rate) does not suit the model."""


_stopped_by: int | None = None  # the stop signal this process received (see note_stop), None if none


def note_stop(signum: int) -> None:
    """Remember that a stop signal (Ctrl-C, SIGTERM, SIGHUP) reached this process, whatever becomes of the
    KeyboardInterrupt raised for it: a library may turn it into an error of its own (MLflow's SQL store makes an
    interrupt inside SQLite a store error) or swallow it (an `except` that keeps going), and the command must still
    end with the interrupt status."""
    global _stopped_by
    _stopped_by = signum


def stop_requested() -> bool:
    """Whether a stop signal reached this process since the last `clear_stop`."""
    return _stopped_by is not None


def clear_stop() -> None:
    """Forget any earlier stop (a new command starts in this process)."""
    global _stopped_by
    _stopped_by = None


SECRET_NAMES = r"[^=&#;\s/?]*(?:token|passw(?:or)?d|pwd|secret|key|auth|sig(?:nature)?|credential)[^=&#;\s/?]*"


def redact(text: str) -> str:
    """Hide every secret a URL inside `text` can carry: the password of 'user:secret@' (with or without a user
    name) and the value of any query or fragment parameter named like one (?token=, &password=, #access_key=)."""
    text = re.sub(r"(//[^/:@\s]*):[^@/\s]+@", r"\1:***@", text)
    return re.sub(rf"([?&#;]{SECRET_NAMES}=)[^&#;\s'\"]+", r"\1***", text, flags=re.IGNORECASE)


def without_credentials(url: str) -> str:
    """`url` with its 'user:secret@' dropped: a link to show and open."""
    return re.sub(r"//[^/@]*@", "//", url)


def allowed_keys(loc: list[str], root: type[BaseModel]) -> list[str]:
    """The field names of the pydantic schema section at `loc` below `root` (list indices skipped), for error lines."""
    model: Any = root
    for part in loc:
        if part.isdigit():
            continue
        annotation = model.model_fields[part].annotation
        model = _section_type(annotation)
    return list(model.model_fields)


def _section_type(annotation: Any) -> Any:
    """Find the section class inside an annotation like list[ConvBlockParams]."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _section_type(arg)
        if found is not None:
            return found
    meta = getattr(annotation, "__origin__", None)
    return _section_type(meta) if meta is not None and meta is not annotation else None


# errno -> what went wrong and the fix, after the path it happened to
_OS_FIXES = {
    errno.ENOSPC: "no space left on the device; free space on it (or move the project to a bigger disk) and run again",
    errno.EDQUOT: "disk quota exceeded; free space within your quota and run again",
    errno.EROFS: "the filesystem is read-only; use a writable folder (or remount it read-write)",
    errno.EACCES: "permission denied; make it writable (and its folder searchable) for this user, or use another path",
    errno.EPERM: "operation not permitted; make it writable for this user, or use another path",
    errno.ENOTDIR: "part of this path is a file, not a folder; fix the path or move that file away",
    errno.EISDIR: "this is a folder where a file is expected; move the folder away or fix the path",
    errno.EEXIST: "this exists and is not a folder; move it away or fix the path",
    errno.ENOENT: "no such file or folder; check the path, or run the stage that creates it",
    errno.ENAMETOOLONG: "the path is too long; use a shorter one",
    errno.ELOOP: "the path has a symbolic-link loop; fix the link",
    errno.EIO: "input/output error, the disk may be failing; check it (dmesg) and run again",
    errno.EMFILE: "too many open files; raise the limit (ulimit -n) and run again",
}


def os_error_line(exc: OSError, data_root: Path | None = None) -> str:
    """'<path>: <problem and fix>', naming data.root when the path is under it."""
    path = exc.filename if exc.filename is not None else None
    fix = _OS_FIXES.get(exc.errno or -1, f"{exc.strerror or exc}; check the path and run again")
    if path is None:
        return f"{exc.strerror or type(exc).__name__}; {fix.split('; ', 1)[-1]}"
    return f"{os.fsdecode(path)}: {fix}{_setting_for(Path(os.fsdecode(path)), data_root)}"


def _setting_for(path: Path, data_root: Path | None) -> str:
    """' (data.root in params.yaml is ...)' when `path` lies in data.root, else ''."""
    if data_root is None:
        return ""
    root = Path(data_root)
    try:
        path.resolve(strict=False).relative_to(root.resolve(strict=False))
    except (ValueError, OSError, RuntimeError):
        return ""
    return f" (data.root in params.yaml is '{root}')"


OUT_OF_MEMORY = (  # how a failed allocation reads in torch, numpy, C++ and the dynamic loader
    "out of memory",
    "can't allocate memory",  # torch's DefaultCPUAllocator
    "cannot allocate memory",  # ENOMEM, and the loader's 'cannot allocate memory in static TLS block'
    "unable to allocate",  # numpy's _ArrayMemoryError
    "std::bad_alloc",
    "failed to map segment from shared object",  # an extension module too big for the address space left
    "memory exhausted",
)
NO_THREAD = "can't start new thread"  # a thread's stack is address space too: under `ulimit -v`, a memory failure


def out_of_memory_line(exc: BaseException) -> str | None:
    """The line for an allocation the machine (or the process's address-space limit, `ulimit -v`) could not serve,
    in torch's CPU or CUDA allocator, numpy, Python or the loader mapping a library, or None. The exception's causes
    count too (a library may wrap a MemoryError in its own error)."""
    limit = address_space_limit()
    seen: set[int] = set()
    found: BaseException | None = exc
    while found is not None and id(found) not in seen:
        seen.add(id(found))
        text = str(found).strip().splitlines()[0] if str(found).strip() else ""
        lowered = text.lower()
        if (
            isinstance(found, MemoryError)
            or type(found).__name__ == "OutOfMemoryError"
            or (isinstance(found, OSError) and found.errno == errno.ENOMEM)
            or any(marker in lowered for marker in OUT_OF_MEMORY)
            or (limit is not None and NO_THREAD in lowered)
        ):
            what = text[:160] or type(found).__name__
            if limit is not None:
                return (
                    f"out of memory ({what}): this process may use only {limit / 2**30:.1f} GiB of address space "
                    f"(`ulimit -v` {limit // 1024}); raise that limit (or lift it: `ulimit -v unlimited`), or lower "
                    f"train.batch_size, evaluate.batch_size or evaluate.throughput_batch_sizes"
                )
            return (
                f"out of memory ({what}); lower train.batch_size, evaluate.batch_size or "
                f"evaluate.throughput_batch_sizes, use smaller models, or run on a machine with more memory"
            )
        found = found.__cause__ or found.__context__
    return None


def address_space_limit() -> int | None:
    """This process's address-space limit in bytes (RLIMIT_AS, `ulimit -v`), or None when it has none."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_AS)
    return None if soft == resource.RLIM_INFINITY else soft


def unexpected_line(exc: BaseException) -> str:
    """One line for an error nobody anticipated, with the path of a log holding its redacted traceback."""
    first = (str(exc).strip().splitlines() or [""])[0]
    summary = redact(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)
    text = redact("convbench " + " ".join(sys.argv[1:]) + "\n" + "".join(traceback.format_exception(exc)))
    try:
        folder = Path(os.environ.get("CONVBENCH_LOG_DIR") or tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        fd, log = tempfile.mkstemp(prefix="convbench-error-", suffix=".log", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as log_error:
        return f"unexpected {summary} (the traceback could not be saved: {log_error.strerror}); please report it"
    return f"unexpected {summary}; the traceback is in {log}; please report it with that file"


PLAIN_PROBLEMS = {  # pydantic's type errors, in the words of the file a user edits
    "tuple_type": "expected a list such as [64, 64]",
    "list_type": "expected a list such as [0, 1]",
    "dict_type": "expected a mapping (key: value lines)",
    "model_type": "expected a mapping (key: value lines)",
    "int_type": "expected a whole number",
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number",
    "float_type": "expected a number",
    "float_parsing": "expected a number",
    "bool_type": "expected true or false",
    "bool_parsing": "expected true or false",
    "string_type": "expected text",
}


NOT_FINITE = "not a finite number; .inf and .nan are not values convbench can train, time or score with: write a number"


def plain_problem(error: Any) -> str:
    """One pydantic error's problem without pydantic's wording ('Value error, ...', 'Input should be a valid tuple')."""
    if error["type"] in PLAIN_PROBLEMS:
        return PLAIN_PROBLEMS[error["type"]]
    message = str(error["msg"]).removeprefix("Value error, ")
    return re.sub(
        r"^(?:Tuple|List|Dictionary) should have (.+?)(?: after validation)?, not (\d+)$",
        r"expected \1, got \2",
        message,
    )
