"""The scale-out pipeline's code on a Jenkins agent: `python3 -m pipeline ...` runs one command of
jenkins/Jenkinsfile.autoscale (see pipeline/cli.py), scripts/get-available-ip.py is the seed's IP finder.

No Django here: the standard library, plus integrations/ for vCenter and F5. The portal imports `contract` (the job
name and build parameters) from here, and nothing else.
"""
