#!/usr/bin/env python3
"""An independent client: the Altinn REST flow with Python `requests`, as an integrator would write it.

Usage: rest_flow.py BASE_URL OWNER_TOKEN SENDER_TOKEN RECIPIENT_TOKEN
Exits non-zero (with the failed assertion) if the server does not behave like Altinn Broker.
"""
import hashlib
import os
import sys
import time

import requests

base, owner, sender, recipient = sys.argv[1:5]
api = base.rstrip("/") + "/broker/api/v1"


def auth(token):
    return {"Authorization": f"Bearer {token}"}


r = requests.post(f"{api}/serviceowner", json={"name": "Python owner"}, headers=auth(owner))
assert r.status_code == 200, r.text
r = requests.put(
    f"{api}/resource/py-res",
    json={"fileTransferTimeToLive": "P7D", "access": {"senders": ["910753614"], "recipients": ["986252932"]}},
    headers=auth(owner),
)
assert r.status_code == 204, r.text
assert requests.get(f"{api}/resource/py-res", headers=auth(owner)).json()["fileTransferTimeToLive"] == "7.00:00:00"

data = os.urandom(3_000_000)
r = requests.post(
    f"{api}/filetransfer",
    json={
        "fileName": "python.bin",
        "resourceId": "urn:altinn:resource:py-res",
        "sendersFileTransferReference": "py-1",
        "sender": "urn:altinn:organization:identifier-no:910753614",
        "recipients": ["0192:986252932"],
        "checksum": hashlib.md5(data).hexdigest(),
        "propertyList": {"from": "python"},
    },
    headers=auth(sender),
)
assert r.status_code == 200, r.text
transfer = r.json()["fileTransferId"]


def chunks():
    for i in range(0, len(data), 65536):
        yield data[i : i + 65536]


# A generator body is sent with chunked transfer encoding, without Content-Length.
r = requests.post(
    f"{api}/filetransfer/{transfer}/upload",
    data=chunks(),
    headers={**auth(sender), "Content-Type": "application/octet-stream"},
)
assert r.status_code == 200, r.text
assert r.json()["fileTransferId"] == transfer

deadline = time.time() + 60
while True:
    overview = requests.get(f"{api}/filetransfer/{transfer}", headers=auth(sender)).json()
    if overview["fileTransferStatus"] == "Published":
        break
    assert time.time() < deadline, overview
    time.sleep(0.05)
assert overview["checksum"] == hashlib.md5(data).hexdigest()
assert overview["sender"] == "0192:910753614"
assert overview["published"]

with requests.get(f"{api}/filetransfer/{transfer}/download", headers=auth(recipient), stream=True) as r:
    assert r.status_code == 200
    assert r.headers["Content-Disposition"] == 'attachment; filename="python.bin"'
    body = b"".join(r.iter_content(1 << 16))
assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()

r = requests.get(f"{api}/filetransfer/{transfer}/download", headers={**auth(recipient), "Range": "bytes=10-19"})
assert r.status_code == 206 and r.content == data[10:20], (r.status_code, r.headers)
assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"

r = requests.post(f"{api}/filetransfer/{transfer}/confirmdownload", headers=auth(recipient))
assert r.status_code == 204, r.text
overview = requests.get(f"{api}/filetransfer/{transfer}", headers=auth(recipient)).json()
assert overview["fileTransferStatus"] == "AllConfirmedDownloaded", overview

found = requests.get(f"{api}/filetransfer", params={"resourceId": "py-res", "role": "sender"}, headers=auth(sender)).json()
assert found == [transfer], found

r = requests.get(f"{api}/filetransfer/00000000-0000-4000-8000-000000000000", headers=auth(sender))
assert r.status_code == 404 and r.headers["Content-Type"] == "application/problem+json"
problem = r.json()
assert problem["code"] == "BRO-00001" and problem["title"] == "Not Found" and problem["traceId"], problem

# Initialize and upload in one multipart request (Altinn's form fields; requests sends the
# data fields before the file, as the endpoint needs).
small = os.urandom(2_500_000)
r = requests.post(
    f"{api}/filetransfer/upload",
    data={
        "Metadata.FileName": "form.bin",
        "Metadata.ResourceId": "py-res",
        "Metadata.SendersFileTransferReference": "form-1",
        "Metadata.Sender": "0192:910753614",
        "Metadata.Recipients": ["0192:986252932"],
        "Metadata.PropertyList[kind]": "form",
    },
    files={"FileTransfer": ("form.bin", small, "application/octet-stream")},
    headers=auth(sender),
)
assert r.status_code == 200, r.text
form_id = r.json()["fileTransferId"]
deadline = time.time() + 60
while requests.get(f"{api}/filetransfer/{form_id}", headers=auth(sender)).json()["fileTransferStatus"] != "Published":
    assert time.time() < deadline
    time.sleep(0.05)
overview = requests.get(f"{api}/filetransfer/{form_id}", headers=auth(sender)).json()
assert overview["propertyList"] == {"kind": "form"} and overview["fileTransferSize"] == len(small), overview
assert requests.get(f"{api}/filetransfer/{form_id}/download", headers=auth(recipient)).content == small

print("python REST flow: OK")
