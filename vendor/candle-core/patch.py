import re,sys
p=sys.argv[1]
s=open(p).read()
lines=s.split('\n')
out=[];i=0;n=0;pending={}
pat=re.compile(r'^(\s*)let (\w+) = grads\.or_insert\(([^)]*)\)\?;\s*$')
while i<len(lines):
    m=pat.match(lines[i])
    if m:
        ind,var,arg=m.groups()
        # find the assignment *var = var.add(&X)?; or .sub(&X)?;
        j=i+1
        amp=re.compile(r'^(\s*)\*'+var+r' = '+var+r'\.(add|sub)\((.*)\)\?(;?)\s*$')
        while j<len(lines) and not amp.match(lines[j]):
            j+=1
        if j>=len(lines) or j-i>12:
            print('no match for',lines[i],file=sys.stderr); out.append(lines[i]); i+=1; continue
        mm=amp.match(lines[j])
        # check var not used between
        between=lines[i+1:j]
        if any(re.search(r'\b'+var+r'\b',b) for b in between):
            print('used between',lines[i],file=sys.stderr); out.append(lines[i]); i+=1; continue
        out.extend(between)
        fn='accumulate' if mm.group(2)=='add' else 'accumulate_neg'
        out.append(f"{mm.group(1)}grads.{fn}({arg}, {mm.group(3)})?{mm.group(4)}")
        n+=1
        i=j+1
        continue
    out.append(lines[i]); i+=1
s='\n'.join(out)
# The gradient's shape is its tensor's: three reductions read it off the old sum.
s=s.replace('broadcast_as(sum_grad.dims())','broadcast_as(arg.dims())')
print('rewrote',n,file=sys.stderr)
open(p,'w').write(s)
