"""Progress in a log: a plain line per tenth, not carriage-return bar updates."""
from ulvm.progress import LineProgress, progress_bar


def test_a_pipe_gets_ten_plain_lines(capsys):
    items = list(progress_bar(range(200), total=200, desc="prepare", unit="img"))   # stderr is captured: no tty
    err = capsys.readouterr().err
    assert items == list(range(200)) and "\r" not in err
    assert err.splitlines()[0] == "prepare: 10% (20/200 img)" and err.splitlines()[-1] == "prepare: 100% (200/200 img)"
    assert len(err.splitlines()) == 10


def test_updates_postfix_and_disable(capsys):
    with LineProgress(total=4, desc="download", unit="B") as bar:
        bar.set_postfix(rate="1 MB/s")
        bar.update(4)
    with LineProgress(total=4, desc="quiet", disable=True) as bar:
        bar.update(4)
    assert capsys.readouterr().err == "download: 100% (4/4 B)  rate 1 MB/s\n"
