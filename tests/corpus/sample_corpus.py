"""The hand-written sample corpus used by the reader tests: every value is known."""

from __future__ import annotations

import io
import json

from PIL import Image

USERS_CSV = """user_id,label,fans,likes,posts_per_week,constant
a,cat,10,1,2,5
b,dog,,3,4,5
c,cat,0,5,6,5
d,dog,7,7,8,5
e,cat,1,9,10,5
f,dog,2,11,12,5
g,cat,3,13,14,5
h,dog,4,15,16,5
i,cat,5,17,18,5
j,dog,6,19,20,5
k,,8,21,22,5
"""

# Interleaved users, a post without image, an empty caption; users j and k have no posts.
POSTS = [
    {"post_id": "p1", "user_id": "b", "text": "dog park", "image": "images/x.png"},
    {"post_id": "p2", "user_id": "a", "text": "cat nap", "image": "images/sub/y.jpg"},
    {"post_id": "p3", "user_id": "b", "text": "", "image": None},
    {"post_id": "p4", "user_id": "c", "text": "hello", "image": "images/x.png"},
    {"post_id": "p5", "user_id": "a", "text": "  ", "image": "images/z.webp"},
    {"post_id": "p6", "user_id": "d", "text": "woof", "image": None},
    {"post_id": "p7", "user_id": "e", "text": "e1", "image": None},
    {"post_id": "p8", "user_id": "f", "text": "f1", "image": None},
    {"post_id": "p9", "user_id": "g", "text": "g1", "image": None},
    {"post_id": "p10", "user_id": "h", "text": "h1", "image": None},
    {"post_id": "p11", "user_id": "i", "text": "i1", "image": None},
]

# Both directions and a duplicate: merged to 3 unique edges.
EDGES_CSV = "src,dst\nb,a\na,b\nc,a\na,b\nd,k\n"


def image_bytes(fmt: str, size=(4, 3), color=(255, 0, 0)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format=fmt)
    return buf.getvalue()


def posts_text(posts: list[dict]) -> str:
    return "".join(json.dumps(p) + "\n" for p in posts)
