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


def test_a_short_row_at_the_published_epochs_is_not_put_down_to_the_epochs():
    import pandas as pd

    from greenlib.report import accuracy_gap, gap_summary

    ours = pd.DataFrame({"model": ["a", "b"], "acc_percent": [70.0, 70.0]})
    pub = pd.DataFrame({"model": ["a", "b"], "acc_percent": [74.0, 74.0]})
    both = accuracy_gap(ours, pub, ["model"], "160", "160", same_budget=True)
    assert set(both["note"]) == {"more than 2 points short, at the same epochs"}
    assert gap_summary(both).endswith("so the epochs are not why (docs/campaign.md, 'Expected gaps')")
    one = accuracy_gap(ours, pub, ["model"], "30", "160", same_budget={"b": True})
    assert list(one["note"]) == ["more than 2 points short", "more than 2 points short, at the same epochs"]
    assert "1 of them trained for other epoch budgets than the published ones, 1 for the same" in gap_summary(one)
    assert gap_summary(accuracy_gap(ours, pub, ["model"], "30", "160")).endswith("the epoch budgets differ")
