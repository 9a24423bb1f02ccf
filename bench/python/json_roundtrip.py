"""json_roundtrip — json.dumps / json.loads of nested data, the way services pass it around.

Builds documents of nested dicts and lists (users with addresses, orders with line items,
floats, unicode and escaped strings, booleans and nulls), serialises them compactly and with
indentation, parses them back, edits the parsed copy and serialises again.  Decoding makes
many small dicts, lists, strings and floats; encoding builds long strings from many parts.
Deterministic; prints a checksum.
Usage: python3 json_roundtrip.py [SCALE]
"""
import json
import random
import sys
import zlib

SCALE = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
         "straße", "café", "naïve", "日本", "данные", "quote\"d", "tab\tbed", "line\nbreak"]


def make_document(rng, n_users):
    users = []
    for u in range(n_users):
        orders = []
        for o in range(rng.randrange(0, 6)):
            items = [{"sku": f"SKU-{rng.randrange(100000):06d}",
                      "qty": rng.randrange(1, 5),
                      "price": round(rng.uniform(0.5, 500.0), 2),
                      "tags": rng.sample(WORDS, rng.randrange(0, 4))}
                     for _ in range(rng.randrange(1, 5))]
            orders.append({"id": u * 100 + o, "items": items, "paid": rng.random() < 0.8,
                           "coupon": None if rng.random() < 0.7 else rng.choice(WORDS)})
        users.append({
            "id": u,
            "name": f"{rng.choice(WORDS)} {rng.choice(WORDS)}",
            "email": f"user{u}@example.org",
            "active": rng.random() < 0.9,
            "score": rng.random() * 100,
            "address": {"street": f"{rng.randrange(1, 999)} {rng.choice(WORDS)} road",
                        "zip": f"{rng.randrange(10000, 99999)}", "geo": [rng.uniform(-90, 90), rng.uniform(-180, 180)]},
            "orders": orders,
        })
    return {"version": 3, "count": n_users, "users": users}


def main():
    rng = random.Random(42)
    rounds = max(1, round(10 * SCALE))
    crc = 0
    total = 0
    for r in range(rounds):
        doc = make_document(rng, 600)
        for _ in range(3):
            text = json.dumps(doc, separators=(",", ":"), sort_keys=(r % 2 == 0), ensure_ascii=(r % 3 == 1))
            back = json.loads(text)
            for user in back["users"]:  # edit the parsed copy
                user["score"] = round(user["score"], 3)
                user["n_orders"] = len(user.pop("orders"))
            pretty = json.dumps(back, indent=2, ensure_ascii=(r % 3 == 0))
            again = json.loads(pretty)
            total += len(text) + len(pretty) + sum(u["n_orders"] for u in again["users"])
        crc = zlib.crc32(pretty.encode(), crc)
        del doc, text, back, pretty, again
    print(f"checksum {total:x}-{crc:08x}")


main()
