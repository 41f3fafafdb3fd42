"""pushsdk.webpush against the published examples: RFC 8291 §5 / Appendix A (Web Push
message encryption) and RFC 8188 §3.1–3.2 (the aes128gcm content coding).

The values are the RFCs' own, base64url as printed there (line wrapping removed). Pinning the
sender's key pair and the salt makes encryption deterministic, so these tests compare bytes an
independent implementation produced — a round trip alone would also pass with a wrong info
string or delimiter on both sides.
"""
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from pushsdk.webpush import (
    DecryptionError,
    WebPushKeys,
    aes128gcm_decrypt,
    aes128gcm_encrypt,
    b64url_decode,
    derive_content_keys,
    parse_header,
    webpush_decrypt,
    webpush_encrypt,
    webpush_ikm,
)

# RFC 8291 §5 and Appendix A.
PLAINTEXT = b"When I grow up, I want to be a watermelon"
AUTH_SECRET = "BTBZMqHH6r4Tts7J_aSIgg"
UA_PRIVATE = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
UA_PUBLIC = ("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcx"
             "aOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4")
AS_PRIVATE = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
AS_PUBLIC = ("BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIg"
             "Dll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8")
SALT = "DGv6ra1nlYgDCS1FRnbzlw"
BODY = ("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml"
        "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPT"
        "pK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN")
# Appendix A intermediate values.
ECDH_SECRET = "kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs"
IKM = "S4lYMb_L0FxCeq0WhDx813KgSYqU26kOyzWUdsXYyrg"
CEK = "oIhVW04MRdy2XN9CiKLxTg"
NONCE = "4h_95klXJ5E_qnoN"
HEADER = ("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27ml"
          "mlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8")
CIPHERTEXT = "8pfeW0KbunFT06SuDKoJH9Ql87S1QUrdirN6GcG7sFz1y1sqLgVi1VhjVkHsUoEsbI_0LpXMuGvnzQ"

# RFC 8188 §3.1 (one record) and §3.2 (two records of rs 25, keyid "a1").
WALRUS = b"I am the walrus"
IKM_31 = "yqdlZ-tYemfogSmv7Ws5PQ"
BODY_31 = "I1BsxtFttlv3u_Oo94xnmwAAEAAA-NAVub2qFgBEuQKRapoZu-IxkIva3MEB1PD-ly8Thjg"
CEK_31 = "_wniytB-ofscZDh4tbSjHw"
NONCE_31 = "Bcs8gkIRKLI8GeI8"
IKM_32 = "BO3ZVPxUlnLORbVGMpbT1Q"
BODY_32 = ("uNCkWiNYzKTnBN9ji3-qWAAAABkCYTHOG8chz_gnvgOqdGYovxyjuqRyJFjEDyoF"
           "1Fvkj6hQPdPHI51OEUKEpgz3SsLWIqS_uA")

b = b64url_decode


def private_key(scalar_b64):
    return ec.derive_private_key(int.from_bytes(b(scalar_b64), "big"), ec.SECP256R1())


def ua_keys():
    return WebPushKeys.from_private_bytes(b(UA_PRIVATE), b(AUTH_SECRET))


def test_the_rfc_key_pairs_are_consistent():
    assert ua_keys().p256dh == UA_PUBLIC
    assert WebPushKeys.from_private_bytes(b(AS_PRIVATE), b(AUTH_SECRET)).p256dh == AS_PUBLIC


def test_rfc8291_message_decrypts_with_the_rfcs_keys():
    assert webpush_decrypt(b(BODY), private_key(UA_PRIVATE), b(AUTH_SECRET)) == PLAINTEXT
    assert ua_keys().decrypt(b(BODY)) == PLAINTEXT


def test_rfc8291_encryption_with_the_rfcs_salt_and_sender_key_gives_its_exact_bytes():
    body = webpush_encrypt(PLAINTEXT, UA_PUBLIC, AUTH_SECRET,
                           as_private_key=private_key(AS_PRIVATE), salt=b(SALT))
    assert body == b(BODY)
    assert len(body) == 144  # 86-octet header + 41 + delimiter + 16-octet tag
    # The same with raw bytes instead of base64url.
    assert webpush_encrypt(PLAINTEXT, b(UA_PUBLIC), b(AUTH_SECRET),
                           as_private_key=private_key(AS_PRIVATE), salt=b(SALT)) == body


def test_rfc8291_intermediate_values():
    ecdh_secret = private_key(AS_PRIVATE).exchange(ec.ECDH(), ua_keys().private_key.public_key())
    assert ecdh_secret == b(ECDH_SECRET)
    ikm = webpush_ikm(ecdh_secret, b(AUTH_SECRET), b(UA_PUBLIC), b(AS_PUBLIC))
    assert ikm == b(IKM)
    assert derive_content_keys(ikm, b(SALT)) == (b(CEK), b(NONCE))
    body = b(BODY)
    assert body[:86] == b(HEADER) and body[86:] == b(CIPHERTEXT)
    header = parse_header(body)
    assert (header.salt, header.record_size, header.keyid, header.size) == (
        b(SALT), 4096, b(AS_PUBLIC), 86)


def test_rfc8188_single_record_example():
    assert aes128gcm_encrypt(WALRUS, b(IKM_31), salt=b(BODY_31)[:16]) == b(BODY_31)
    assert aes128gcm_decrypt(b(BODY_31), b(IKM_31)) == WALRUS
    assert derive_content_keys(b(IKM_31), b(BODY_31)[:16]) == (b(CEK_31), b(NONCE_31))


def test_rfc8188_two_record_example_with_keyid_and_padding():
    header = parse_header(b(BODY_32))
    assert (header.record_size, header.keyid) == (25, b"a1")
    seen = []

    def lookup(keyid):
        seen.append(keyid)
        return b(IKM_32)

    assert aes128gcm_decrypt(b(BODY_32), lookup) == WALRUS
    assert seen == [b"a1"]
    # Dropping the second record leaves a stream whose last record is not marked last.
    with pytest.raises(DecryptionError, match="truncated"):
        aes128gcm_decrypt(b(BODY_32)[:header.size + 25], b(IKM_32))
    # Swapping the records breaks the per-record nonces.
    body = b(BODY_32)
    first, second = body[23:48], body[48:]
    with pytest.raises(DecryptionError, match="authentication"):
        aes128gcm_decrypt(body[:23] + second + first, b(IKM_32))


def test_keys_serialise_and_come_back_equal():
    keys = WebPushKeys.generate()
    again = WebPushKeys.from_dict(keys.to_dict())
    assert again == keys and again.p256dh == keys.p256dh and len(keys.public_key) == 65
    assert WebPushKeys.generate() != keys
    text = repr(keys)  # secrets stay out of logs
    assert keys.to_dict()["private_key"] not in text and keys.auth not in text
    assert repr(keys.auth_secret) not in text


@pytest.mark.parametrize("bad", [
    {}, {"private_key": "AAAA", "auth": AUTH_SECRET},            # scalar of the wrong size
    {"private_key": "A" * 43, "auth": AUTH_SECRET},              # scalar 0: not a key
    {"private_key": UA_PRIVATE, "auth": "short"},
    {"private_key": UA_PRIVATE, "auth": 5}, {"private_key": "!!!", "auth": AUTH_SECRET},
    "not an object",
])
def test_bad_serialised_keys_are_value_errors(bad):
    with pytest.raises(ValueError):
        WebPushKeys.from_dict(bad)


@pytest.mark.parametrize("p256dh", [
    AS_PUBLIC[:-2],                       # too short
    "B" + UA_PUBLIC[1:-1] + "A",          # 65 octets, not on the curve
    "Ay" + UA_PUBLIC[2:],                 # not uncompressed
    "a+b/",                               # not base64url
])
def test_senders_refuse_bad_device_keys(p256dh):
    with pytest.raises(ValueError):
        webpush_encrypt(b"x", p256dh, AUTH_SECRET)


def test_plaintext_must_fit_in_one_record():
    keys = WebPushKeys.generate()
    body = webpush_encrypt(bytes(4079), keys.p256dh, keys.auth)  # 4079 + 1 + 16 = 4096
    assert keys.decrypt(body) == bytes(4079)
    with pytest.raises(ValueError, match="one record"):
        webpush_encrypt(bytes(4080), keys.p256dh, keys.auth)
