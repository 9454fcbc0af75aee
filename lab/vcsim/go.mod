module vmautoscale/lab/vcsim

go 1.19

require (
	github.com/google/uuid v0.0.0
	github.com/vmware/govmomi v0.24.2
)

replace (
	github.com/google/uuid => /usr/share/gocode/src/github.com/google/uuid
	github.com/vmware/govmomi => /usr/share/gocode/src/github.com/vmware/govmomi
)
