from p2p_market.net.ratelimit import KeyedRateLimiter


def test_each_key_has_its_own_bucket_and_refills() -> None:
    limiter = KeyedRateLimiter(per_second=2.0, burst=3)
    assert [limiter.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 0.0)  # another key is not affected
    assert not limiter.allow("a", 0.4)
    assert limiter.allow("a", 0.5)  # one token after half a second at 2/s
    assert limiter.limited == 2


def test_forgets_the_least_recently_used_keys() -> None:
    limiter = KeyedRateLimiter(per_second=1.0, burst=1, max_keys=2)
    assert limiter.allow("a", 0.0) and limiter.allow("b", 0.0) and limiter.allow("c", 0.0)
    assert limiter.allow("a", 0.0)  # "a" was forgotten, so it starts full again
    assert not limiter.allow("c", 0.0)
