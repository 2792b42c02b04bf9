"""Drive moto's S3 (started with INITIAL_NO_AUTH_ACTION_COUNT=3, so it checks SigV4
signatures after three unauthenticated calls) for the evidence tests.

  s3_peer.py setup ENDPOINT BUCKET            -> prints {"access_key_id", "secret_access_key"}
  s3_peer.py put ENDPOINT BUCKET KEY TEXT AK SK   (overwrite one object: tampering)
  s3_peer.py keys ENDPOINT BUCKET PREFIX AK SK     -> prints the keys under PREFIX, one per line
"""
import json, sys

import boto3

cmd, endpoint, bucket = sys.argv[1], sys.argv[2], sys.argv[3]
if cmd == "setup":
    # The three calls moto lets through unsigned: create a user and its key.
    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                       aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
    iam.create_user(UserName="vigil")
    iam.put_user_policy(UserName="vigil", PolicyName="s3", PolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
    key = iam.create_access_key(UserName="vigil")["AccessKey"]
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
    s3.create_bucket(Bucket=bucket)
    print(json.dumps({"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}))
else:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id=sys.argv[-2], aws_secret_access_key=sys.argv[-1])
    if cmd == "put":
        s3.put_object(Bucket=bucket, Key=sys.argv[4], Body=sys.argv[5].encode())
    elif cmd == "keys":
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=sys.argv[4]):
            for obj in page.get("Contents", []):
                print(obj["Key"])
