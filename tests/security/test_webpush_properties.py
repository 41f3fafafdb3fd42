"""Properties of pushsdk.webpush: round trips, and every way a body can be damaged or misused
ends in DecryptionError — never another exception, never a wrong plaintext."""
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pushsdk.webpush import (
    DecryptionError,
    WebPushKeys,
    aes128gcm_decrypt,
    aes128gcm_encrypt,
    b64url_decode,
    b64url_encode,
    decrypt_data,
    encrypt_data,
    webpush_encrypt,
)

# Key generation is the slow part; a few fixed devices are enough for the properties.
DEVICE = WebPushKeys.generate()
OTHER = WebPushKeys.generate()
RS_OFFSET = slice(16, 20)  # the rs field: the one header field no tag covers (see below)

plaintexts = st.binary(max_size=3000)


@settings(max_examples=150, deadline=None)
@given(plaintext=plaintexts, padding=st.integers(0, 64))
def test_round_trip(plaintext, padding):
    body = webpush_encrypt(plaintext, DEVICE.p256dh, DEVICE.auth, padding=padding)
    assert len(body) == 86 + len(plaintext) + 1 + padding + 16
    assert DEVICE.decrypt(body) == plaintext


def test_each_message_has_a_fresh_salt_and_sender_key():
    one, two = (webpush_encrypt(b"same", DEVICE.p256dh, DEVICE.auth) for _ in range(2))
    assert one[:16] != two[:16] and one[21:86] != two[21:86] and one[86:] != two[86:]


def _open(body):
    """What the device gets: the plaintext, or a DecryptionError (any other exception fails
    the test)."""
    try:
        return DEVICE.decrypt(body)
    except DecryptionError as exc:
        return exc


def test_flipping_any_bit_of_any_byte_fails_authentication():
    # Exhaustive over a short message: 8 flips of each of its 117 bytes.
    plaintext = b"launch at dawn"
    body = webpush_encrypt(plaintext, DEVICE.p256dh, DEVICE.auth)
    outcomes = {}
    for i in range(len(body)):
        for bit in range(8):
            damaged = bytearray(body)
            damaged[i] ^= 1 << bit
            result = _open(bytes(damaged))
            outcomes[i, bit] = result
            if i in range(RS_OFFSET.start, RS_OFFSET.stop):
                # RFC 8188 does not authenticate rs: a changed rs either moves the record
                # boundary (then a record fails) or leaves the one record whole — and then
                # the plaintext is the original, never another one.
                assert isinstance(result, DecryptionError) or result == plaintext
            else:
                assert isinstance(result, DecryptionError), (i, bit)
    failures = sum(isinstance(r, DecryptionError) for r in outcomes.values())
    assert failures >= 8 * len(body) - 32  # only rs bits may leave the message whole


@settings(max_examples=200, deadline=None)
@given(plaintext=st.binary(min_size=1, max_size=3000), data=st.data())
def test_tampering_any_byte_fails_with_decryption_error(plaintext, data):
    body = bytearray(webpush_encrypt(plaintext, DEVICE.p256dh, DEVICE.auth))
    index = data.draw(st.integers(0, len(body) - 1).filter(
        lambda i: i not in range(RS_OFFSET.start, RS_OFFSET.stop)))
    body[index] ^= data.draw(st.integers(1, 255))
    with pytest.raises(DecryptionError):
        DEVICE.decrypt(bytes(body))


@settings(max_examples=100, deadline=None)
@given(plaintext=plaintexts, cut=st.integers(1, 200))
def test_truncated_or_extended_bodies_fail(plaintext, cut):
    body = webpush_encrypt(plaintext, DEVICE.p256dh, DEVICE.auth)
    with pytest.raises(DecryptionError):
        DEVICE.decrypt(body[:max(len(body) - cut, 0)])
    with pytest.raises(DecryptionError):
        DEVICE.decrypt(body + bytes(cut))


@settings(max_examples=100, deadline=None)
@given(plaintext=plaintexts, auth=st.binary(min_size=16, max_size=16))
def test_wrong_auth_secret_fails(plaintext, auth):
    assume(auth != DEVICE.auth_secret)
    body = webpush_encrypt(plaintext, DEVICE.p256dh, DEVICE.auth)
    wrong = WebPushKeys(DEVICE.private_key, auth)
    with pytest.raises(DecryptionError, match="authentication"):
        wrong.decrypt(body)


def test_another_devices_key_fails():
    body = webpush_encrypt(b"for DEVICE only", DEVICE.p256dh, DEVICE.auth)
    with pytest.raises(DecryptionError):
        OTHER.decrypt(body)
    # Even with DEVICE's auth secret: the ECDH share is what an eavesdropper lacks.
    with pytest.raises(DecryptionError):
        WebPushKeys(OTHER.private_key, DEVICE.auth_secret).decrypt(body)


@settings(max_examples=300, deadline=None)
@given(blob=st.binary(max_size=400))
def test_arbitrary_bytes_never_raise_anything_else(blob):
    with pytest.raises(DecryptionError):
        DEVICE.decrypt(blob)


@settings(max_examples=100, deadline=None)
@given(blob=st.binary(min_size=21, max_size=300), rs=st.integers(0, 2**32 - 1))
def test_arbitrary_headers_never_raise_anything_else(blob, rs):
    body = bytearray(blob)
    body[16:20] = rs.to_bytes(4, "big")
    with pytest.raises(DecryptionError):
        aes128gcm_decrypt(bytes(body), bytes(16))


@settings(max_examples=150, deadline=None)
@given(plaintext=st.binary(max_size=600), rs=st.integers(18, 300),
       ikm=st.binary(min_size=16, max_size=32), keyid=st.binary(max_size=20),
       padding=st.integers(0, 5))
def test_multi_record_round_trip(plaintext, rs, ikm, keyid, padding):
    chunk = rs - 17  # plaintext octets per record: rs minus tag and delimiter
    records = max(1, -(-len(plaintext) // chunk))
    last = len(plaintext) - (records - 1) * chunk
    if last + 1 + padding > rs - 16:
        with pytest.raises(ValueError, match="padding"):
            aes128gcm_encrypt(plaintext, ikm, keyid=keyid, record_size=rs, padding=padding)
        return
    body = aes128gcm_encrypt(plaintext, ikm, keyid=keyid, record_size=rs, padding=padding)
    assert len(body) == 21 + len(keyid) + len(plaintext) + records * 17 + padding
    assert aes128gcm_decrypt(body, ikm) == plaintext
    with pytest.raises(DecryptionError):
        aes128gcm_decrypt(body, bytes(len(ikm)) if any(ikm) else b"\x01" * len(ikm))


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=200), raw=st.binary(max_size=100))
def test_base64url_round_trip(text, raw):
    assert b64url_decode(b64url_encode(raw)) == raw
    encoded = b64url_encode(text.encode())
    assert "=" not in encoded and "+" not in encoded and "/" not in encoded


@pytest.mark.parametrize("bad", ["a", "ab+c", "ab/c", "ab c", "é", b"\xff"])
def test_bad_base64url_is_a_value_error(bad):
    with pytest.raises(ValueError):
        b64url_decode(bad)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=100, deadline=None)
@given(value=json_values)
def test_push_data_convention_round_trip(value):
    sealed = encrypt_data(value, DEVICE.p256dh, DEVICE.auth)
    assert list(sealed) == ["aes128gcm"]
    assert decrypt_data(sealed, DEVICE) == value


@pytest.mark.parametrize("data", [
    {"aes128gcm": "!!"}, {"aes128gcm": 5}, {"other": "x"}, "text", None,
    {"aes128gcm": b64url_encode(webpush_encrypt(b"not json {", DEVICE.p256dh, DEVICE.auth))},
    {"aes128gcm": b64url_encode(webpush_encrypt(b"\xff\xfe", DEVICE.p256dh, DEVICE.auth))},
])
def test_push_data_that_does_not_open_is_a_decryption_error(data):
    with pytest.raises(DecryptionError):
        decrypt_data(data, DEVICE)
