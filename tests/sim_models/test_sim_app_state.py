"""Screen and app state timelines (simulator.app_state.AppStateTimeline)."""
import random
import statistics

import pytest

from simulator.app_state import INF, AppState, AppStateModel, AppStateTimeline

HOUR, DAY = 3600.0, 86400.0


def test_user_timeline_has_a_dark_night_and_daytime_sessions():
    model = AppStateModel(night_jitter_s=0)  # screen off 23:00-07:00 exactly
    timeline = AppStateTimeline.generate(model, 2 * DAY, 0.0, random.Random(1))
    assert timeline.duration == 2 * DAY
    for night_start, night_end in ((0, 7 * HOUR), (23 * HOUR, 31 * HOUR), (47 * HOUR, 48 * HOUR)):
        for period in timeline.periods:
            if period.state is not AppState.INACTIVE:
                assert period.end <= night_start or period.start >= night_end
    # periods tile the run
    assert timeline.periods[0].start == 0
    assert all(a.end == b.start for a, b in zip(timeline.periods, timeline.periods[1:]))
    assert all(a.state is not b.state for a, b in zip(timeline.periods, timeline.periods[1:]))


def test_session_counts_and_foreground_share_match_the_model():
    model = AppStateModel(opens_per_day=50, mean_session_s=180, foreground_share=0.2)
    counts, fg, on = [], 0, 0
    for seed in range(40):
        timeline = AppStateTimeline.generate(model, DAY, 0.0, random.Random(seed))
        counts.append(timeline.screen_sessions())
        for period in timeline.periods:
            if period.state is not AppState.INACTIVE:
                on += 1
                fg += period.state is AppState.FOREGROUND
    assert statistics.mean(counts) == pytest.approx(50, rel=0.1)
    assert fg / on == pytest.approx(0.2, abs=0.05)


def test_queries():
    timeline = AppStateTimeline.from_sessions(
        [(100.0, 200.0, AppState.FOREGROUND), (500.0, 600.0, AppState.BACKGROUND)], duration=1000.0
    )
    assert [p.state for p in timeline.periods] == [
        AppState.INACTIVE, AppState.FOREGROUND, AppState.INACTIVE, AppState.BACKGROUND,
        AppState.INACTIVE]
    assert timeline.state_at(150.0) is AppState.FOREGROUND
    assert timeline.screen_on(550.0) and not timeline.screen_on(300.0)
    assert timeline.next_change(150.0) == 200.0
    assert timeline.next_change(700.0) == INF
    assert timeline.since_foreground(50.0) == INF
    assert timeline.since_foreground(150.0) == 0.0
    assert timeline.since_foreground(450.0) == 250.0
    assert timeline.screen_off_intervals() == [(0.0, 100.0), (200.0, 500.0), (600.0, INF)]
    assert timeline.screen_sessions() == 2


def test_constant_models():
    rng = random.Random(0)
    background = AppStateTimeline.generate(AppStateModel(kind="background"), DAY, 0.0, rng)
    assert background.screen_off_intervals() == [(0.0, INF)]
    foreground = AppStateTimeline.generate(AppStateModel(kind="foreground"), DAY, 0.0, rng)
    assert foreground.state_at(DAY * 3) is AppState.FOREGROUND


def test_same_seed_same_timeline():
    model = AppStateModel()
    a = AppStateTimeline.generate(model, DAY, 8 * HOUR, random.Random("s:1:app"))
    b = AppStateTimeline.generate(model, DAY, 8 * HOUR, random.Random("s:1:app"))
    assert a == b


def test_bad_models_are_refused():
    with pytest.raises(ValueError, match="foreground_share"):
        AppStateModel(foreground_share=1.5)
    with pytest.raises(ValueError, match="model"):
        AppStateModel(kind="sleepy")
    with pytest.raises(ValueError, match="night_jitter_s"):
        AppStateModel(night_jitter_s=5 * HOUR)
