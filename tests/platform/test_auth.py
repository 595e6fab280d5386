import time

from services.platform import auth


def test_session_token_round_trips_to_the_user_id():
    token = auth.session_token(42, "secret")
    assert auth.session_user(token, "secret", max_age=60) == 42


def test_session_token_signed_with_another_secret_is_refused():
    token = auth.session_token(42, "other")
    assert auth.session_user(token, "secret", max_age=60) is None


def test_tampered_user_id_is_refused():
    token = auth.session_token(42, "secret")
    forged = "43" + token[2:]
    assert auth.session_user(forged, "secret", max_age=60) is None


def test_expired_token_is_refused():
    token = auth.sign("42", "secret", purpose="session", now=time.time() - 120)
    assert auth.unsign(token, "secret", purpose="session", max_age=60) is None


def test_a_csrf_token_is_not_a_session_token():
    token = auth.sign("42", "secret", purpose="csrf")
    assert auth.session_user(token, "secret", max_age=60) is None


def test_garbage_tokens_are_refused_not_raised():
    for garbage in ["", "abc", "a.b", "1.x.y", "..", None]:
        assert auth.session_user(garbage, "secret", max_age=60) is None


def test_bearer_token_check():
    assert auth.bearer_ok("Bearer s3cret", "s3cret")
    assert auth.bearer_ok("bearer s3cret", "s3cret")
    assert not auth.bearer_ok("Bearer wrong", "s3cret")
    assert not auth.bearer_ok("Basic s3cret", "s3cret")
    assert not auth.bearer_ok(None, "s3cret")
    assert not auth.bearer_ok("Bearer ", ""), "an unset token never authorises"
