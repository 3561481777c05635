"""The shared plot style: log2 step axis ticks that can be read (no overlapping labels)."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

from kphases.plotting import log_step_axis, step_position

DOUBLING_TO_2048 = [0] + [2**k for k in range(1, 12)]


@pytest.mark.parametrize("steps", [DOUBLING_TO_2048, DOUBLING_TO_2048[:-1], [0] + [2**k for k in range(1, 18)], [0, 2, 4, 8, 16]])
def test_step_tick_labels_do_not_overlap(steps):
    # The phases and transfer figures' panel size (reproduce.plotting.grid's default), font size 9.
    with plt.rc_context({"font.size": 9}):
        figure, axis = plt.subplots(figsize=(4.2, 3.0))
        axis.plot(step_position(steps), range(len(steps)))
        log_step_axis(axis, steps)
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        boxes = [label.get_window_extent(renderer) for label in axis.get_xticklabels() if label.get_text()]
        texts = [label.get_text() for label in axis.get_xticklabels()]
        plt.close(figure)
    assert texts[-1] in (str(steps[-1]), f"{steps[-1] // 1024}k") and texts[0] == "0"
    for left, right in zip(boxes, boxes[1:]):
        assert left.x1 < right.x0, f"tick labels overlap: {texts}"


def test_long_runs_label_thousands_of_steps_in_units_of_1024():
    figure, axis = plt.subplots()
    log_step_axis(axis, DOUBLING_TO_2048)
    assert [label.get_text() for label in axis.get_xticklabels()] == ["0", "2", "8", "32", "128", "512", "2k"]
    plt.close(figure)
