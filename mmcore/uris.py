"""URIs as they may be shown: without credentials.

A tracking URI, a Prefect API URL or a Dask address may carry a user name and password
(`http://user:secret@host:5000`, `postgresql+psycopg://user:secret@db/mlflow`). Everything that
mmpipe logs, records (run records, MLflow params and tags, the flow's result) or uses as the base
of a link goes through `public_uri` first; the URI with its credentials is only ever used to
connect.
"""

from __future__ import annotations

import re
from typing import overload

# RFC 3986: `scheme://[userinfo@]host...`; userinfo cannot hold an unencoded "/", "?" or "#",
# which is also where requests, httpx and SQLAlchemy stop looking for it.
_USERINFO = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/?#]*@)")


@overload
def public_uri(uri: str) -> str: ...
@overload
def public_uri(uri: None) -> None: ...


def public_uri(uri: str | None) -> str | None:
    """`uri` without its user-info part (`user:password@`); anything else unchanged.

    >>> public_uri("http://alice:s3cret@mlflow.team.example:5000/")
    'http://mlflow.team.example:5000/'
    >>> public_uri("sqlite:////runs/mlflow.db")
    'sqlite:////runs/mlflow.db'
    """
    if not uri:
        return uri
    return _USERINFO.sub(r"\g<scheme>", uri, count=1)
