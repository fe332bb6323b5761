import pytest



def test_accuracy_gap_puts_ours_beside_the_published_accuracy_with_the_budgets():
    import pandas as pd

    from greenlib.report import accuracy_gap, gap_summary

    ours = pd.DataFrame({"model": ["a", "a", "b", "c"], "acc_percent": [70.0, 72.0, 75.0, 60.0]})
    pub = pd.DataFrame({"model": ["a", "b", "d"], "acc_percent": [73.5, 74.0, 80.0]})
    gap = accuracy_gap(ours, pub, ["model"], "30 epochs", "160 epochs")
    assert list(gap["model"]) == ["a", "b", "c"]
    assert list(gap["acc_percent"]) == [71.0, 75.0, 60.0]  # seeds averaged
    assert gap["gap_points"].iloc[0] == -2.5 and gap["gap_points"].iloc[1] == 1.0
    assert list(gap["note"]) == ["more than 2 points short", "above", "no published value"]
    assert set(gap["our_epochs"]) == {"30 epochs"} and set(gap["published_epochs"]) == {"160 epochs"}
    line = gap_summary(gap)
    assert line.startswith("1 of 2 rows are more than 2 points below") and "30 epochs" in line
    close = accuracy_gap(ours[ours["model"] == "b"], pub, ["model"], "30", "160")
    assert gap_summary(close).startswith("every row with a published accuracy is within 2 points")
    with pytest.raises(ValueError, match="lack \\['acc_percent'\\]"):
        accuracy_gap(ours.drop(columns="acc_percent"), pub, ["model"], "30", "160")
