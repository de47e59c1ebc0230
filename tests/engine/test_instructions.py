import pytest

from engine.instructions import DIALECTS, EMOTIONS, Instruction, InstructionError, SPEEDS, parse_tags


def test_tags_render_in_step_audio_form():
    assert Instruction(emotion="happy", intensity=1, dialect="cantonese", speed="fast1").tags() == "(高兴1)(粤语)(快速1)"
    assert Instruction(dialect="english", style="rap").tags() == "(英文)(RAP)"
    assert Instruction(dialect="sichuanese", speed="slow2").tags() == "(四川话)(慢速2)"


def test_every_instruction_round_trips_through_tags():
    count = 0
    for dialect in DIALECTS:
        for emotion in ("neutral", *EMOTIONS):
            for intensity in ([0] if emotion == "neutral" else range(1, 6)):
                for speed in SPEEDS:
                    ins = Instruction(emotion=emotion, intensity=intensity, dialect=dialect, speed=speed)
                    parsed, rest = parse_tags(ins.tags() + "text")
                    assert parsed == ins and rest == "text"
                    count += 1
    assert count == len(DIALECTS) * 31 * 5


@pytest.mark.parametrize("kwargs,message", [
    (dict(emotion="joyful"), "unknown emotion 'joyful'"),
    (dict(dialect="klingon"), "unknown dialect"),
    (dict(speed="fast3"), "unknown speed"),
    (dict(emotion="sad", intensity=0), "needs an intensity in 1..5"),
    (dict(emotion="sad", intensity=6), "needs an intensity in 1..5"),
    (dict(intensity=2), "without an emotion"),
    (dict(style="rap", emotion="angry", intensity=2), "takes no emotion"),
    (dict(style="humming", speed="fast1"), "no speaking rate"),
])
def test_unknown_or_contradictory_instructions_fail(kwargs, message):
    with pytest.raises(InstructionError, match=message):
        Instruction(**kwargs)


def test_text_language_must_match_dialect():
    Instruction(dialect="cantonese").check_text_language("zh")
    with pytest.raises(InstructionError, match="reads zh text, got en"):
        Instruction(dialect="cantonese").check_text_language("en")


def test_parse_tags_errors_and_aliases():
    assert parse_tags("(广东话)你好")[0].dialect == "cantonese"
    with pytest.raises(InstructionError, match="unknown tag"):
        parse_tags("(开心9)hi")
    with pytest.raises(InstructionError, match="two speed tags"):
        parse_tags("(快速1)(慢速1)hi")
