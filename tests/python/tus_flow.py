#!/usr/bin/env python3
"""An independent TUS client (tuspy) uploads a file in chunks, is interrupted, and resumes.

Usage: tus_flow.py BASE_URL SENDER_TOKEN FILE_TRANSFER_ID FILE
"""
import sys

from tusclient import client

base, token, transfer, path = sys.argv[1:5]
url = f"{base.rstrip('/')}/broker/api/v1/filetransfer/upload/tus/{transfer}"
tus = client.TusClient(url, headers={"Authorization": f"Bearer {token}"})

# Per-chunk checksums (sha1) on every PATCH: Ferry verifies them (Altinn's store always refuses).
first = tus.uploader(path, chunk_size=1 << 20, upload_checksum=True, metadata={"filename": "tus.bin"})
for _ in range(3):
    first.upload_chunk()
assert first.offset == 3 << 20, first.offset
location = first.url

# The client "restarts": a new uploader asks the server where to continue (HEAD) and resumes.
second = tus.uploader(path, url=location, chunk_size=1 << 20, upload_checksum=True)
assert second.get_offset() == 3 << 20, second.get_offset()
second.upload()
assert second.offset == second.get_file_size(), (second.offset, second.get_file_size())
print("tus flow: OK", location)
