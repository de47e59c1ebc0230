"""Text normalisation for the CER/WER filters: seed-tts-eval's rules, made more lenient.

Lenient where seed-tts-eval's run_wer.py is literal: curly apostrophes count as ASCII ones, Chinese
is lowercased, traditional characters are simplified on both sides, NFC is applied, all Unicode
punctuation goes and any whitespace separates words. Figures reported as seed-tts-eval figures use
:mod:`filters.seedtts`, which matches the script exactly (eval.json names the one each figure used).

English (and other spaced languages): lowercase, punctuation removed (apostrophes kept), whitespace
collapsed, split into words. Chinese (and Japanese): traditional -> simplified, punctuation (CJK and
ASCII) removed, split into characters. Numbers are never rewritten ("13" and "thirteen" differ).

    >>> normalize("It's 5 o'clock, Mr. Smith!", "en")
    ["it's", '5', "o'clock", 'mr', 'smith']
    >>> normalize("這是「測試」。", "zh")
    ['这', '是', '测', '试']

Traditional -> simplified uses ``zhconv`` (the converter seed-tts-eval uses) when it is installed,
else a built-in table of common characters.
"""
from __future__ import annotations

import string
import unicodedata
import warnings

CHAR_LANGS = frozenset({"zh", "ja", "yue"})  # scored per character: no spaces between words
APOSTROPHES = {"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\uff07": "'"}

# Common traditional characters and their simplified forms (checked against zhconv in the tests).
TRADITIONAL = (
    "這個們來時說會對過國學還發後沒見長開問麼樣經與點現動機當業車東電話書親從間愛兒聽頭體無實氣關應場讓義"
    "處邊萬幾歲聲門員區認識準備響聯係歡灣臺漢語寫讀買賣錢銀貝飛鳥魚馬龍風雲習覺歷內給總結務統軍隊進選擇題"
    "論議記設計網絡線紅綠藍細組織維護醫藥農產廠廣園圓團條離雖難雞鴨鵝華爾陽陰陸際險隨隻雙麗顏顯類願頁順須"
    "領顧飯館餓養餘馮駕驗髮鬥鬧鬱魯鹽麥黃齊齒龜誰調談請諸謝證變讚貓財貨貴賀資賽贏趕軟輕較輛輸轉辦連週遊運"
    "達違遠適遺郵鄉醜針鐘錯鍵鏡閉閒閱陳陣雜靈靜頂項預頓頒頻額飲飽駐騎髒鬆鳳鳴黨齡"
)
SIMPLIFIED = (
    "这个们来时说会对过国学还发后没见长开问么样经与点现动机当业车东电话书亲从间爱儿听头体无实气关应场让义"
    "处边万几岁声门员区认识准备响联系欢湾台汉语写读买卖钱银贝飞鸟鱼马龙风云习觉历内给总结务统军队进选择题"
    "论议记设计网络线红绿蓝细组织维护医药农产厂广园圆团条离虽难鸡鸭鹅华尔阳阴陆际险随只双丽颜显类愿页顺须"
    "领顾饭馆饿养余冯驾验发斗闹郁鲁盐麦黄齐齿龟谁调谈请诸谢证变赞猫财货贵贺资赛赢赶软轻较辆输转办连周游运"
    "达违远适遗邮乡丑针钟错键镜闭闲阅陈阵杂灵静顶项预顿颁频额饮饱驻骑脏松凤鸣党龄"
)
BUILTIN_T2S = str.maketrans(TRADITIONAL, SIMPLIFIED)


def to_simplified(text: str) -> str:
    """Traditional -> simplified Chinese (zhconv when installed, else the built-in table)."""
    try:
        with warnings.catch_warnings():  # zhconv imports the deprecated pkg_resources
            warnings.simplefilter("ignore", DeprecationWarning)
            import zhconv
    except ImportError:
        return text.translate(BUILTIN_T2S)
    return zhconv.convert(text, "zh-cn")


def is_punctuation(ch: str) -> bool:
    # Unicode P* covers ASCII and CJK punctuation; string.punctuation adds ASCII symbols ($, +, ~)
    # and their fullwidth forms, as seed-tts-eval strips them too.
    if ch in string.punctuation:
        return True
    if unicodedata.category(ch).startswith("P"):
        return True
    return unicodedata.normalize("NFKC", ch) in string.punctuation


def strip_punctuation(text: str) -> str:
    """Remove punctuation except apostrophes (removed, not spaced: the protocol's choice)."""
    for curly, ascii_ in APOSTROPHES.items():
        text = text.replace(curly, ascii_)
    return "".join(ch for ch in text if ch == "'" or not is_punctuation(ch))


def normalize(text: str, lang: str) -> list[str]:
    """Text -> the units errors are counted on: words, or characters for ``CHAR_LANGS``.

    Args:
        text: reference text or ASR hypothesis.
        lang: "en", "zh", ... (the task's text language).
    Returns:
        list of lowercase units, punctuation-free; empty for empty or punctuation-only text.
    """
    text = strip_punctuation(unicodedata.normalize("NFC", text or "")).lower()
    if lang in CHAR_LANGS:
        return [ch for ch in to_simplified(text) if not ch.isspace()]
    return text.split()
