"""Panel: marker normalisation, aliases, resolution order, and the errors users see."""

from __future__ import annotations

import pytest

from immunoprofile.exceptions import AmbiguousMarkerError, MarkerNotFoundError
from immunoprofile.panel import ALIASES, Panel, canonical_marker, normalize_marker, resolve_marker
from immunoprofile.sample import Sample, make_channel_table


@pytest.mark.parametrize(
    "label, key",
    [
        ("CD4 BV510", "CD4"),
        ("CD4-FITC", "CD4"),
        ("cd4", "CD4"),
        (" CD4 ", "CD4"),
        ("CD45RA PE-Cy7", "CD45RA"),
        ("CD45", "CD45"),
        ("CD8 PerCP-Cy5.5", "CD8"),
        ("CD3 APC-H7", "CD3"),
        ("FoxP3 Alexa Fluor 647", "FOXP3"),
        ("CD56 PE-Dazzle594", "CD56"),
        ("CD16 APC-Fire750", "CD16"),
        ("IgD BB515", "IGD"),
        ("HLA-DR", "HLADR"),
        ("HLA DR V500", "HLADR"),
        ("Comp-BV510-A :: CD4", "CD4"),
        ("145Nd_CD4", "CD4"),
        ("Live/Dead Aqua", "VIABILITY"),
        ("L/D", "VIABILITY"),
        ("Zombie NIR", "VIABILITY"),
        ("7-AAD", "VIABILITY"),
        ("FVS780", "VIABILITY"),
        ("PE-A", ""),
        (None, ""),
        ("", ""),
    ],
)
def test_normalize_marker(label, key):
    assert normalize_marker(label) == key


def test_cd45ra_distinct_from_cd45():
    assert normalize_marker("CD45RA") != normalize_marker("CD45")
    assert canonical_marker("CD45RA FITC") != canonical_marker("CD45 FITC")


@pytest.mark.parametrize(
    "a, b",
    [
        ("CD25", "IL2RA"),
        ("CD25", "IL-2Ra"),
        ("CD127", "IL7R"),
        ("FOXP3", "FoxP3"),
        ("CD56", "NCAM1"),
        ("CD16", "FCGR3A"),
        ("CD183", "CXCR3"),
        ("CD196", "CCR6"),
        ("HLA-DR", "HLADR"),
        ("Live/Dead", "viability"),
        ("CD127 (IL7R) BV711", "CD127"),
    ],
)
def test_aliases(a, b):
    assert canonical_marker(a) == canonical_marker(b)


def test_alias_groups_do_not_overlap():
    seen = {}
    for canon, names in ALIASES.items():
        for n in (canon, *names):
            assert seen.setdefault(n, canon) == canon, n


def _sample() -> Sample:
    import numpy as np

    names = ["FSC-A", "FSC-H", "SSC-A", "FITC-A", "PE-A", "PE-Cy7-A", "BV421-A", "APC-A",
             "BV510-A", "Time"]  # fmt: skip
    markers = [None, None, None, "CD45RA FITC", "IL-2Ra", "CD127 PE-Cy7", "CXCR3 BV421",
               "CD45 APC", "Live/Dead Aqua", None]  # fmt: skip
    table = make_channel_table(names, markers)
    return Sample(np.zeros((3, len(names)), dtype=np.float32), table, path="/data/p01.fcs")


def test_resolution_order_and_kinds():
    p = Panel(_sample())
    assert p.index("CD25") == 4  # alias of the label IL-2Ra
    assert p.index("cd25") == 4
    assert p.index("IL2RA") == 4
    assert p.index("CD127") == 5
    assert p.index("IL7R") == 5
    assert p.index("CD183") == 6
    assert p.index("CD45RA") == 3
    assert p.index("CD45") == 7
    assert p.index("live") == 8
    assert p.index("Viability") == 8
    assert p.index("PE-A") == 4  # exact channel name
    assert p.index("pe-cy7-a") == 5  # channel name, any case
    assert p.channel("CD127") == "PE-Cy7-A"
    assert p.marker("CD25") == "IL-2Ra"
    assert p.markers() == ["CD45RA FITC", "IL-2Ra", "CD127 PE-Cy7", "CXCR3 BV421",
                           "CD45 APC", "Live/Dead Aqua"]  # fmt: skip
    assert "FOXP3" not in p and "CD4" not in p and "CD25" in p
    assert resolve_marker(_sample(), "CXCR3") == 6
    assert p.indices(["CD25", "FSC-A"]) == [4, 0]


def test_missing_marker_lists_markers_channels_and_suggests():
    with pytest.raises(MarkerNotFoundError) as err:
        Panel(_sample()).index("CD45RB")
    msg = str(err.value)
    assert "/data/p01.fcs" in msg and "'CD45RB' not found" in msg
    assert "Did you mean" in msg and "CD45RA FITC" in msg
    assert "CD127 PE-Cy7 (PE-Cy7-A)" in msg  # markers with their channels
    assert "FSC-A" in msg and "Time" in msg  # channels
    assert isinstance(err.value, KeyError)


def test_ambiguous_marker():
    import numpy as np

    table = make_channel_table(["FITC-A", "PE-A", "APC-A"], ["CD4 FITC", "CD4 PE", "CD8"])
    s = Sample(np.zeros((1, 3), dtype=np.float32), table, name="dup")
    with pytest.raises(AmbiguousMarkerError, match="FITC-A.*PE-A"):
        Panel(s).index("CD4")
    assert Panel(s).index("PE-A") == 1


def test_user_pins_and_aliases():
    import numpy as np

    table = make_channel_table(["FITC-A", "PE-A", "APC-A"], ["CD4 FITC", "Tac", None])
    s = Sample(np.zeros((1, 3), dtype=np.float32), table)
    with pytest.raises(MarkerNotFoundError):
        Panel(s).index("CD25")
    assert Panel(s, aliases={"CD25": ["Tac"]}).index("CD25") == 1
    assert Panel(s, aliases={"FOXP3": "APC-A"}).index("FoxP3") == 2  # pin to a channel
    assert Panel(s, aliases={"CD25": ["nothing", "APC-A"]}).index("IL2RA") == 2


def test_panel_from_channel_table_and_nan_markers():
    import pandas as pd

    t = pd.DataFrame({"name": ["A1", "B1"], "marker": [float("nan"), "CD19"]})
    p = Panel(t)
    assert p.markers() == ["CD19"]
    assert p.index("cd19") == 1
    assert p.table()["key"].tolist() == ["", "CD19"]


def test_labels_seen_in_real_files():
    import pandas as pd

    # 100715.fcs has a dump channel "VIVID / CD14"; index_sorted_example.fcs labels look
    # like "CD21;FITC;530/30@488/B"; G11.fcs has "Alexa Fluor™ 405-A"
    table = pd.DataFrame(
        {
            "name": ["V450-A", "BL 530/30-A", "VL1-A", "G560-A", "R1-A"],
            "marker": [
                "VIVID / CD14",
                "CD21;FITC;530/30@488/B",
                "Alexa Fluor™ 405-A",
                "CD127",
                "TCRγδ BV421",
            ],  # fmt: skip
        }
    )
    p = Panel(table)
    assert p.index("CD14") == 0 and p.index("Live/Dead") == 0
    assert p.index("CD21") == 1
    assert normalize_marker("Alexa Fluor™ 405-A") == ""
    assert p.index("TCRgd") == 4
    # a whole-label match wins over a part of a combined label
    t2 = pd.DataFrame({"name": ["A-A", "B-A"], "marker": ["CD14 / CD19 / Viability", "CD19"]})
    assert Panel(t2).index("CD19") == 1
    assert Panel(t2).index("CD14") == 0


@pytest.mark.parametrize(
    "label, antigen",
    [
        ("CD4 (SK3) BV510", "CD4"),
        ("CD8 (RPA-T8)", "CD8"),
        ("HLA-DR (L243) V500", "HLADR"),
        ("FoxP3 (236A/E7) PE", "FOXP3"),
        ("Anti-CD19 PerCP-Cy5.5", "CD19"),
        ("anti-human CD3 V450", "CD3"),
        ("hCD56 PE-Cy7", "CD56"),
        ("huCD19 APC", "CD19"),
    ],
)
def test_clone_names_and_antibody_words_leave_the_antigen(label, antigen):
    """Real $PnS labels name the clone in parentheses or the antibody ("anti-", a species
    prefix); the antigen is what a template asks for."""
    assert canonical_marker(label) == antigen
    table = make_channel_table(["FSC-A", "X-A", "Y-A"], [None, "CD20", label])
    assert Panel(table).index(antigen) == 2


def test_parenthesised_alias_and_lone_antibody_words():
    assert canonical_marker("CD127 (IL7R) BV711") == "CD127"
    assert canonical_marker("IL7R (CD127)") == "CD127"
    assert normalize_marker("Human") == ""  # no antigen named
    assert canonical_marker("CD45RA (HI100)") == "CD45RA"  # not CD45


def test_marker_on_area_and_height_of_one_detector_reads_the_area():
    """BD files label every pulse measurement of a detector with its marker; the area is
    the channel to read, then the height. Two detectors with one label stay ambiguous."""
    names = ["FSC-A", "PE-Cy7-A", "PE-Cy7-H", "PE-Cy7-W", "APC-H", "APC-W", "FITC-A", "PE-A"]
    markers = [None, "CD14", "CD14", "CD14", "CD11c", "CD11c", "CD3", "CD3"]
    panel = Panel(make_channel_table(names, markers))
    assert panel.channel("CD14") == "PE-Cy7-A"
    assert panel.channel("CD11c") == "APC-H"
    with pytest.raises(AmbiguousMarkerError, match="FITC-A"):
        panel.index("CD3")


def test_marker_on_area_and_height_in_a_real_file(realdata):
    path = realdata / "flowjo9" / "a2004_O1T2pb05i_A2_A02.fcs"
    if not path.exists():
        pytest.skip(f"{path} absent")
    from immunoprofile.io.fcs import read_fcs

    panel = Panel(read_fcs(path))
    assert panel.channel("CD14") == "PE-CY7-A"  # also on PE-CY7-H
    assert panel.channel("HLA-DR") == "PerCP-CY5-5-A"  # labelled MHCII on -A and -H


def test_scatter_named_the_way_other_instruments_do():
    """A template names scatter the BD way; Beckman Coulter writes FS INT / FS PEAK (or
    FS Lin), others a bare FSC. Integral before peak; a log channel is not taken."""
    coulter = Panel(make_channel_table(["FS INT", "FS PEAK", "SS INT", "SS PEAK", "FL1 INT"]))
    assert [coulter.channel(c) for c in ("FSC-A", "FSC-H", "SSC-A", "SSC-H")] == [
        "FS INT",
        "FS PEAK",
        "SS INT",
        "SS PEAK",
    ]
    assert Panel(make_channel_table(["FSC", "SSC", "FL1"])).channel("SSC-A") == "SSC"
    with pytest.raises(MarkerNotFoundError):
        Panel(make_channel_table(["FS Log", "SS Log"])).index("FSC-A")
    # the BD name wins where it exists
    both = Panel(make_channel_table(["FSC", "FSC-A"]))
    assert both.channel("FSC-A") == "FSC-A"


def test_scatter_of_a_real_coulter_file(realdata):
    path = realdata / "FlowKit" / "data" / "multi_dataset_fcs" / "coulter.lmd"
    if not path.exists():
        pytest.skip(f"{path} absent")
    from immunoprofile.io.fcs import read_fcs

    with pytest.warns(Warning):
        sample = read_fcs(path)
    panel = Panel(sample)
    assert (panel.channel("FSC-A"), panel.channel("SSC-A")) == ("FS Lin", "SS Lin")


def test_normalize_never_fails():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=300, deadline=None)
    @hypothesis.given(st.text(max_size=40))
    def check(text):
        key = normalize_marker(text)
        assert key == key.upper() and " " not in key
        assert canonical_marker(text) == canonical_marker(text)  # deterministic

    check()
