import io

from kinetoscope._progress import LineProgress, progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_whole_lines_and_a_terminal_gets_tqdm():
    log = io.StringIO()
    bar = LineProgress(range(3), desc="scan", unit="video", file=log, interval=0)
    assert list(bar) == [0, 1, 2]
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 4  # one per update, one at the end
    assert lines[-1].startswith("scan: 3/3 (100%)")
    quiet = io.StringIO()
    with progress(total=10, desc="x", file=quiet) as slow:  # not a terminal: LineProgress
        slow.set_postfix(loss="0.5")
        slow.update(10)
    assert quiet.getvalue().strip().endswith("loss=0.5")
    assert type(progress(total=1, file=_Terminal())).__name__ == "tqdm"
    off = io.StringIO()
    list(progress(range(5), file=off, enabled=False))
    assert off.getvalue() == ""
