"""The README's first lines and its option reference stay true."""

from pathlib import Path

from sm_magic.magics import option_reference

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    block = README.split("```bash\n", 1)[1].split("```", 1)[0].strip().splitlines()
    assert [line.split()[:2] for line in block] == [["make", "demo"], ["make", "test"]]
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def test_option_reference_matches_the_magics_help():
    between = README.split("<!-- options:start -->\n", 1)[1].split("\n<!-- options:end -->", 1)[0]
    assert between == option_reference(), (
        "README option reference is stale: regenerate it from sm_magic.magics.option_reference()")
