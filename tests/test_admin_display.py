"""How the admin shows stored values (common/admin_display.py): numbers rounded, lists as lists."""

from django.utils import translation

from common.admin_display import number_text, plain_list


def test_numbers_are_rounded_to_two_decimals_at_most():
    assert number_text("85.00196249999999") == "85"
    assert number_text(85.456) == "85.46"
    assert number_text("90.5") == "90.5"
    assert number_text(70.0) == "70"
    assert number_text(None) == "-" and number_text("") == "-"
    assert number_text("NaN") == "NaN" and number_text("high") == "high"  # not a number: shown as stored
    with translation.override("ko"):
        assert number_text(0.123) == "0.12"


def test_lists_are_shown_one_item_a_line_not_as_json():
    html = plain_list(["web-001", "<b>", ""])
    assert html == '<ul class="plain-list"><li>web-001</li><li>&lt;b&gt;</li></ul>'
    assert plain_list([]) == "-" and plain_list(None) == "-"
