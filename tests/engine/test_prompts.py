from engine.instructions import Instruction
from engine.prompts import BOS, BOT, EOT, ByteTokenizer, ClonePrompt, build_tts_prompt, system_prompt
from engine.tokens import interleave


def _turns(ids, tok):
    """Split prompt ids into (role, body ids) turns."""
    assert ids[0] == BOS
    out, i = [], 1
    while i < len(ids):
        assert ids[i] == BOT
        j = ids.index(EOT, i) if EOT in ids[i:] else len(ids)
        body = ids[i + 1:j]
        role_end = body.index(tok.encode("\n")[0]) + 1
        out.append((tok.decode(body[:role_end]).strip(), body[role_end:]))
        i = j + 1
    return out


def test_layout_without_clone():
    tok = ByteTokenizer()
    ids = build_tts_prompt("今天天气很好", Instruction(emotion="happy", intensity=2, dialect="cantonese"), tok)
    turns = _turns(ids, tok)
    assert [r for r, _ in turns] == ["system", "human", "assistant"]
    assert tok.decode(turns[1][1]) == "(高兴2)(粤语)今天天气很好"
    assert turns[2][1] == []  # the model writes from here
    assert ids[-1] != EOT


def test_clone_turn_carries_prompt_audio_ids():
    tok = ByteTokenizer()
    audio = tuple(interleave([1, 2, 3, 4], [5, 6, 7, 8, 9, 10]))
    clone = ClonePrompt(speaker="alice", text="Prompt words.", audio_ids=audio)
    ids = build_tts_prompt("Target words.", Instruction(dialect="english", speed="slow1"), tok, clone)
    turns = _turns(ids, tok)
    assert [r for r, _ in turns] == ["system", "human", "assistant", "human", "assistant"]
    assert "[alice]" in tok.decode(turns[0][1])
    assert tok.decode(turns[1][1]) == "Prompt words."
    assert tuple(turns[2][1]) == audio
    assert tok.decode(turns[3][1]) == "(英文)(慢速1)Target words."


def test_rap_uses_the_short_timbre_prompt():
    rap = system_prompt(Instruction(dialect="english", style="rap"))
    speech = system_prompt(Instruction(dialect="english"))
    assert "timbre" in rap and len(rap) < len(speech) / 2


def test_byte_layout_is_compact_and_below_audio():
    tok = ByteTokenizer()
    layout = tok.layout()
    assert max(tok.encode("ÿ中")) < layout.vq02_offset == tok.text_size
    assert layout.vocab_size == tok.text_size + 1024 + 4096
