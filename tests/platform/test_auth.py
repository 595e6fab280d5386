import time

from services.platform import auth

# A token signed in the last minute is handed out again, so a fresh token may be a minute old.
LIFETIME = 3600


def test_session_token_round_trips_to_the_user_id():
    token = auth.session_token(42, "secret")
    assert auth.session_user(token, "secret", max_age=LIFETIME) == 42


def test_session_token_signed_with_another_secret_is_refused():
    token = auth.session_token(42, "other")
    assert auth.session_user(token, "secret", max_age=LIFETIME) is None


def test_tampered_user_id_is_refused():
    token = auth.session_token(42, "secret")
    forged = "43" + token[2:]
    assert auth.session_user(forged, "secret", max_age=LIFETIME) is None


def test_expired_token_is_refused():
    token = auth.sign("42", "secret", purpose="session", now=time.time() - 2 * LIFETIME)
    assert auth.unsign(token, "secret", purpose="session", max_age=LIFETIME) is None


def test_a_csrf_token_is_not_a_session_token():
    token = auth.sign("42", "secret", purpose="csrf")
    assert auth.session_user(token, "secret", max_age=LIFETIME) is None


def test_garbage_tokens_are_refused_not_raised():
    for garbage in ["", "abc", "a.b", "1.x.y", "..", None]:
        assert auth.session_user(garbage, "secret", max_age=LIFETIME) is None


def test_bearer_token_check():
    assert auth.bearer_ok("Bearer s3cret", "s3cret")
    assert auth.bearer_ok("bearer s3cret", "s3cret")
    assert not auth.bearer_ok("Bearer wrong", "s3cret")
    assert not auth.bearer_ok("Basic s3cret", "s3cret")
    assert not auth.bearer_ok(None, "s3cret")
    assert not auth.bearer_ok("Bearer ", ""), "an unset token never authorises"


def test_a_session_token_carries_its_generation():
    token = auth.session_token(42, "secret", generation=3)
    assert auth.session_claims(token, "secret", max_age=LIFETIME) == (42, 3)
    assert auth.session_user(token, "secret", max_age=LIFETIME) == 42


def test_a_changed_generation_breaks_the_signature():
    user, generation, issued, mac = auth.session_token(42, "secret", 3).split(".")
    newer = f"{user}.{int(generation) + 1}.{issued}.{mac}"
    assert auth.session_claims(newer, "secret", max_age=LIFETIME) is None


def test_a_token_from_before_generations_is_refused():
    """``<user>.<issued>.<mac>``: the sessions made by a user id alone ended with accounts."""
    old = auth.sign("42", "secret", purpose="session")
    assert auth.session_claims(old, "secret", max_age=LIFETIME) is None
    assert auth.session_user(old, "secret", max_age=LIFETIME) is None


def test_odd_signed_values_are_refused_not_raised():
    for value in ("0.0", "42.", ".3", "42.-1", "42.3.4", "٤٢.0", "9" * 11 + ".0", "42." + "9" * 19):
        token = auth.sign(value, "secret", purpose="session")
        assert auth.session_claims(token, "secret", max_age=LIFETIME) is None, value
